"""Reading NDJSON files line by line and cutting them into chunks (infra/chunks.py)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.chunks import Chunk, Limits, Line, body, chunked, read_lines
from tests.conftest import examples

PATIENT = b'{"resourceType":"Patient","id":"p"}'
OBSERVATION = b'{"resourceType":"Observation","id":"o"}'
BUNDLE = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [{}, {}, {}]}).encode()


def test_lines_keep_their_numbers_skip_blank_ones_and_say_what_they_hold(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(b"\xef\xbb\xbf" + PATIENT + b"\r\n\n" + OBSERVATION + b"\n   \n" + BUNDLE + b"\n{not json\n[1]")
    lines = list(read_lines(path))
    assert [line.number for line in lines] == [1, 3, 5, 6, 7]
    assert lines[0].text == PATIENT, "the BOM and the CRLF are gone"
    assert [(line.resources, line.starts_group) for line in lines] == [
        (1, True),
        (1, False),
        (3, True),
        (1, False),
        (1, False),
    ]
    assert [line.number for line in read_lines(path, start=4)] == [5, 6, 7]
    assert lines[-1].read_to == path.stat().st_size


def test_a_gzip_file_reads_like_the_plain_one_whatever_its_name(tmp_path: Path) -> None:
    text = b"\n".join([PATIENT, OBSERVATION, b"", BUNDLE]) + b"\n"
    plain, packed = tmp_path / "a.ndjson", tmp_path / "b.data"
    plain.write_bytes(text)
    packed.write_bytes(gzip.compress(text))
    strip = [(line.number, line.text, line.resources, line.starts_group) for line in read_lines(plain)]
    assert [(line.number, line.text, line.resources, line.starts_group) for line in read_lines(packed)] == strip


def test_a_gzip_file_cut_short_fails_while_reading(tmp_path: Path) -> None:
    path = tmp_path / "cut.ndjson.gz"
    path.write_bytes(gzip.compress(PATIENT * 1000 + b"\n")[:-20])
    with pytest.raises(EOFError):
        list(read_lines(path))


def lines_of(*kinds: str) -> list[Line]:
    """`P` a Patient line, `o` another resource, `B` a bundle line of 3 resources; each 10 bytes."""
    made = {"P": (1, True), "o": (1, False), "B": (3, True)}
    return [Line(n, b"x" * 9, *made[kind]) for n, kind in enumerate(kinds, start=1)]


def numbers(chunks: list[Chunk]) -> list[list[int]]:
    return [[line.number for line in chunk.lines] for chunk in chunks]


def test_chunks_end_before_a_patient_once_full_by_count() -> None:
    chunks = list(chunked(lines_of(*"PooPooPoo"), Limits(resources=4, bytes=10_000)))
    assert numbers(chunks) == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert not any(chunk.continues for chunk in chunks)


def test_chunks_end_by_bytes_and_a_bundle_line_counts_its_entries() -> None:
    assert numbers(list(chunked(lines_of(*"PoPoPo"), Limits(resources=100, bytes=40)))) == [[1, 2, 3, 4], [5, 6]]
    assert numbers(list(chunked(lines_of(*"BBBB"), Limits(resources=6, bytes=10_000)))) == [[1, 2], [3, 4]]


def test_a_patient_larger_than_a_chunk_is_cut_and_the_rest_says_it_continues() -> None:
    chunks = list(chunked(lines_of(*"PoPooooooPo"), Limits(resources=3, bytes=10_000)))
    assert numbers(chunks) == [[1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert [chunk.continues for chunk in chunks] == [False, False, True, True]


def test_without_patients_lines_are_cut_by_count_alone_and_a_line_past_the_limits_goes_alone() -> None:
    big = Line(3, b"y" * 100)
    lines = [*lines_of("o", "o"), big, *lines_of("o")]
    assert numbers(list(chunked(lines, Limits(resources=5, bytes=50)))) == [[1, 2], [3], [1]]


def test_a_body_holds_the_lines_in_order_one_a_line() -> None:
    assert body([Line(4, b"a"), Line(9, b"b")]) == b"a\nb\n"


kinds = st.lists(st.sampled_from("PoooB"), max_size=60)


@settings(max_examples=examples(200))
@given(kinds, st.integers(1, 12), st.integers(10, 120), st.lists(st.integers(1, 40), min_size=60, max_size=60))
def test_chunking_never_loses_repeats_or_reorders_a_line_and_keeps_a_group_that_fits(
    drawn: list[str], resources: int, size: int, lengths: list[int]
) -> None:
    lines = [
        Line(n, b"x" * lengths[n - 1], 3 if kind == "B" else 1, kind in "PB") for n, kind in enumerate(drawn, start=1)
    ]
    limits = Limits(resources, size)
    chunks = list(chunked(lines, limits))
    assert [line for chunk in chunks for line in chunk.lines] == lines
    for chunk in chunks:
        within = chunk.resources <= resources and sum(line.size for line in chunk.lines) <= size
        assert within or len(chunk.lines) == 1
    where = {line.number: index for index, chunk in enumerate(chunks) for line in chunk.lines}
    starts = [index for index, line in enumerate(lines) if line.starts_group]
    for begin, end in zip(starts, [*starts[1:], len(lines)], strict=False):
        group = lines[begin:end]
        if sum(line.resources for line in group) <= resources and sum(line.size for line in group) <= size:
            assert len({where[line.number] for line in group}) == 1, "a group that fits is never cut"
    for chunk in chunks:
        first = chunk.lines[0]
        grouped_before = any(line.starts_group for line in lines[: first.number - 1])
        assert chunk.continues == (grouped_before and not first.starts_group)
