from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from fixtures.synthetic import PatientProfile, patient_record
from fixtures.volume import journey_profile, journeys, write_volume


def read_lines(path: Path) -> list[dict]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [json.loads(line) for line in data.splitlines()]


@pytest.mark.parametrize("name", ["volume.ndjson", "volume.ndjson.gz"])
def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_patients(tmp_path: Path, name: str) -> None:
    first, second, other = tmp_path / "a" / name, tmp_path / "b" / name, tmp_path / "c" / name
    for path, seed in ((first, 7), (second, 7), (other, 8)):
        path.parent.mkdir()
        write_volume(path, 4, seed)
    assert first.read_bytes() == second.read_bytes()
    ids = {r["id"] for r in read_lines(first) if r["resourceType"] == "Patient"}
    assert len(ids) == 4
    assert ids.isdisjoint(r["id"] for r in read_lines(other) if r["resourceType"] == "Patient")


def test_a_gzip_volume_names_no_time_and_no_file(tmp_path: Path) -> None:
    path = tmp_path / "v.ndjson.gz"
    write_volume(path, 1, 1)
    header = path.read_bytes()[:10]
    assert header[4:8] == b"\0\0\0\0", "mtime 0"
    assert not header[3] & 0x08, "no file name"


def test_each_patient_is_a_journey_with_its_lines_together_and_the_patient_first(tmp_path: Path) -> None:
    path = tmp_path / "v.ndjson"
    written = write_volume(path, 6, 3)
    resources = read_lines(path)
    assert written.lines == written.resources == len(resources)
    starts = [index for index, r in enumerate(resources) if r["resourceType"] == "Patient"]
    assert len(starts) == written.patients == 6
    assert starts[0] == 0
    for begin, end in zip(starts, [*starts[1:], len(resources)], strict=True):
        patient = resources[begin]
        own = resources[begin:end]
        kinds = Counter(r["resourceType"] for r in own)
        assert kinds["Encounter"] >= 2
        assert kinds["Observation"] >= 2 * 12
        assert kinds["Consent"] == 1
        assert min(kinds[k] for k in ("Condition", "Procedure", "MedicationStatement")) >= 1
        ids = {f"{r['resourceType']}/{r['id']}" for r in own}
        for resource in own[1:]:
            subject = resource.get("subject", resource.get("patient", {})).get("reference")
            assert subject == f"Patient/{patient['id']}"
            encounter = resource.get("encounter", {}).get("reference")
            assert encounter is None or encounter in ids


def test_about_sixty_resources_a_patient() -> None:
    sizes = [len(record.resources) for record in journeys(50, 11)]
    assert 45 <= sum(sizes) / len(sizes) <= 75


def test_bundles_hold_the_same_resources_one_patient_a_line(tmp_path: Path) -> None:
    plain, bundled = tmp_path / "r.ndjson", tmp_path / "b.ndjson"
    write_volume(plain, 3, 5)
    written = write_volume(bundled, 3, 5, bundles=True)
    bundles = read_lines(bundled)
    assert written.lines == len(bundles) == 3
    assert all(b["resourceType"] == "Bundle" and b["type"] == "transaction" for b in bundles)
    assert [e["resource"] for b in bundles for e in b["entry"]] == read_lines(plain)


def test_an_interrupted_write_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "v.ndjson"

    def interrupt(done: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_volume(path, 5, 1, written=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_later_visits_come_after_the_first_visits_resources_unchanged() -> None:
    profile = journey_profile(42)
    once = patient_record(PatientProfile(**{**profile.__dict__, "visits": 1})).resources
    thrice = patient_record(PatientProfile(**{**profile.__dict__, "visits": 3})).resources
    assert thrice[: len(once) - 1] == once[:-1], "everything but the consent, which comes last"
    assert thrice[-1] == once[-1]
    extra = thrice[len(once) - 1 : -1]
    assert [r["resourceType"] for r in extra].count("Encounter") == 2
    assert len(extra) == 2 * (1 + len(profile.observations))


def test_a_volume_needs_a_patient_and_a_profile_a_visit() -> None:
    with pytest.raises(ValueError, match="patients must be between 1 and"):
        next(journeys(0, 1))
    with pytest.raises(ValueError, match="visits must be at least 1, got 0"):
        PatientProfile(seed=1, visits=0)
