from __future__ import annotations

from pathlib import Path

import pytest

from conformance._yaml import FileProblemsError
from conformance.requirements import AREAS, load_requirements


def test_the_shipped_requirements_cover_every_area_with_shall_and_should() -> None:
    requirements = load_requirements()
    assert {requirement.area for requirement in requirements.values()} == set(AREAS)
    assert {requirement.level for requirement in requirements.values()} == {"SHALL", "SHOULD"}
    assert all(requirement.source and requirement.text for requirement in requirements.values())


def test_the_trust_requirements_name_each_mutual_tls_negative() -> None:
    texts = " ".join(r.text for r in load_requirements().values() if r.area == "trust")
    for negative in ("without a certificate", "another CA", "expired", "not on the allow list", "role"):
        assert negative in texts


def test_a_malformed_requirements_file_lists_every_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "requirements.yaml"
    path.write_text(
        "- {id: HUB-FHIR-01, level: SHALL, area: fhir, source: s, text: t}\n"
        "- {id: HUB-FHIR-01, level: SHALL, area: fhir, source: s, text: t}\n"
        "- {id: fhir-1, level: MAY, area: fhir, source: s, text: t, extra: 1}\n"
        "- {id: HUB-TRN-01, area: transport, source: s, text: t}\n"
    )
    with pytest.raises(FileProblemsError) as caught:
        load_requirements(path)
    assert [str(problem) for problem in caught.value.problems] == [
        f"{path}:2: id HUB-FHIR-01 is defined twice",
        f"{path}:3: a requirement: `level` must be one of SHALL, SHOULD; got 'MAY'",
        f"{path}:3: a requirement: unknown key `extra`",
        f"{path}:3: id 'fhir-1' does not look like HUB-<AREA>-<two digits>",
        f"{path}:4: a requirement needs `level`",
    ]
