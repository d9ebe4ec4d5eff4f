from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.corpora import CORPORA, CorpusError, corpus_file, mii_kds_bundles, read_ndjson


def test_the_mii_kds_corpus_has_its_22_transaction_bundles() -> None:
    bundles = mii_kds_bundles()
    assert len(bundles) == 22
    assert {corpus.bundle["type"] for corpus in bundles} == {"transaction"}
    assert bundles[0].name.startswith("Bundle-mii-exa-test-data-bundle")


def test_the_vendored_mii_kds_bundles_are_the_shared_test_data_byte_for_byte(shared_dir: Path) -> None:
    shared = shared_dir / "testdata" / "mii-kds"
    vendored = CORPORA["mii-kds"]
    assert sorted(p.name for p in shared.glob("*.json")) == sorted(p.name for p in vendored.glob("*.json"))
    changed = [p.name for p in sorted(shared.glob("*.json")) if p.read_bytes() != (vendored / p.name).read_bytes()]
    assert not changed, f"{vendored} differs from {shared}; vendor the new files and update SOURCE.md"


def test_a_corpus_reference_names_a_file_inside_a_known_corpus() -> None:
    path = corpus_file("mii-kds/Bundle-mii-exa-test-data-bundle-pat-1.json")
    assert path.parent == CORPORA["mii-kds"]


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("nope/file.json", "unknown corpus 'nope'"),
        ("mii-kds/../secrets", "name one file directly inside the corpus"),
        ("mii-kds/missing.json", "no such file"),
    ],
)
def test_bad_corpus_references_say_what_is_wrong(reference: str, message: str) -> None:
    with pytest.raises(CorpusError, match=message.replace(".", r"\.")):
        corpus_file(reference)


def test_an_empty_folder_is_not_a_corpus(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no Bundle-"):
        mii_kds_bundles(tmp_path)


def test_ndjson_yields_one_resource_per_line_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "Patient.ndjson"
    path.write_text('{"resourceType": "Patient", "id": "a"}\n\n{"resourceType": "Patient", "id": "b"}\n')
    assert [resource["id"] for resource in read_ndjson(path)] == ["a", "b"]


def test_a_broken_ndjson_line_is_named_by_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "Condition.ndjson"
    path.write_text('{"resourceType": "Condition"}\n{"resourceType": "Condition",\n')
    with pytest.raises(CorpusError, match=rf"{path}:2: not valid JSON"):
        list(read_ndjson(path))


def test_an_ndjson_line_without_resource_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.ndjson"
    path.write_text('{"id": "a"}\n')
    with pytest.raises(CorpusError, match=rf"{path}:1: expected a FHIR resource"):
        list(read_ndjson(path))
