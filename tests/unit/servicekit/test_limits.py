"""Input limits: measured exactly from a body's bytes, refused naming the limit, configured per service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from servicekit.config import ConfigError
from servicekit.fhir import FhirError, check_json_limits, parse_json
from servicekit.limits import (
    DEFAULT_INPUT_LIMITS,
    ApplyInputLimits,
    InputLimits,
    current_input_limits,
    input_limits,
    input_limits_from_environment,
)
from servicekit.web import error_response, read_body
from tests.conftest import MII_KDS_DIR

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=40,
)


def shape(value: Any) -> tuple[int, int, int]:
    """Depth, items and the longest string (bytes as json.dumps writes it) of a decoded document."""
    if isinstance(value, list | dict):
        children = list(value.items()) if isinstance(value, dict) else [(None, v) for v in value]
        depth, items, longest = 0, len(children), 0
        for key, child in children:
            child_depth, child_items, child_longest = shape(child)
            depth, items = max(depth, child_depth), items + child_items
            longest = max(longest, child_longest, shape(key)[2] if key is not None else 0)
        return depth + 1, items, longest
    return 0, 0, len(json.dumps(value).encode()) - 2 if isinstance(value, str) else 0


def within(limits: InputLimits, body: bytes) -> FhirError | None:
    """What `check_json_limits` says about `body` under `limits` (None: within them)."""
    try:
        with input_limits(limits):
            check_json_limits(body)
    except FhirError as refused:
        return refused
    return None


@given(JSON_VALUES, st.sampled_from([None, 2]))
def test_the_measure_of_any_document_is_exact_however_it_is_written(value: Any, indent: int | None) -> None:
    body = json.dumps(value, indent=indent).encode()
    depth, items, longest = shape(value)
    exact = InputLimits(json_max_depth=depth, json_max_items=items, json_max_string_bytes=max(longest, 1))
    assert within(exact, body) is None
    if depth:
        assert "JSON_MAX_DEPTH is" in str(within(InputLimits(json_max_depth=depth - 1), body))
    if items:
        assert "JSON_MAX_ITEMS is" in str(within(InputLimits(json_max_items=items - 1), body))
    if longest > 1:
        assert "JSON_MAX_STRING_BYTES is" in str(within(InputLimits(json_max_string_bytes=longest - 1), body))


@pytest.mark.parametrize("path", sorted(MII_KDS_DIR.glob("Bundle-*.json")), ids=lambda p: p.stem)
def test_real_mii_bundles_are_measured_as_their_parsed_shape(path: Any) -> None:
    body = path.read_bytes()
    depth, items, longest = shape(json.loads(body))
    assert within(InputLimits(json_max_depth=depth, json_max_items=items, json_max_string_bytes=longest), body) is None
    assert within(InputLimits(json_max_depth=depth - 1), body) is not None
    assert within(InputLimits(json_max_items=items - 1), body) is not None
    assert within(DEFAULT_INPUT_LIMITS, body) is None


def test_ndjson_is_measured_over_all_its_lines() -> None:
    line = b'{"resourceType": "Patient", "name": [{"given": ["A", "B"]}]}'  # 6 items, 4 levels
    body = b"\n".join([line] * 10) + b"\n"
    assert within(InputLimits(json_max_items=60, json_max_depth=4), body) is None
    assert "holds 66 JSON array items" in str(within(InputLimits(json_max_items=60), body + line))


def test_a_broken_line_does_not_hide_the_brackets_of_the_next() -> None:
    body = b'{"a": "no end\n' + b"[" * 70 + b"]" * 70
    assert "JSON_MAX_DEPTH" in str(within(InputLimits(), body))


@pytest.mark.parametrize(
    ("body", "limit"),
    [
        (b"[" * 50_000 + b"]" * 50_000, "nests JSON 50000 levels deep; the limit JSON_MAX_DEPTH is 64"),
        (b'{"a":' * 100 + b"0" + b"}" * 100, "nests JSON 100 levels deep; the limit JSON_MAX_DEPTH is 64"),
        (b"[" + b"[]," * 1_000_000 + b"[]]", "holds 1000001 JSON array items and object members"),
        (b'["' + b"x" * (1024 * 1024 + 1) + b'"]', "a JSON string of 1048577 bytes; the limit JSON_MAX_STRING_BYTES"),
        (b'["' + b'\\"' * 600_000 + b'"]', "a JSON string of 1200000 bytes"),
    ],
    ids=["deep-arrays", "deep-objects", "wide", "long-string", "long-escaped-string"],
)
def test_a_body_past_a_default_limit_is_refused_with_413_naming_it(body: bytes, limit: str) -> None:
    with pytest.raises(FhirError) as refused:
        parse_json(body)
    assert (refused.value.status, refused.value.code) == (413, "too-costly")
    assert limit in refused.value.diagnostics


def test_a_body_deeper_than_the_parser_can_follow_is_refused_as_too_deep_not_a_crash() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(FhirError) as refused, input_limits(InputLimits(json_max_depth=1_000_000)):
        parse_json(deep)
    assert refused.value.status == 413
    assert "deeper than the parser can follow; the limit JSON_MAX_DEPTH is 1000000" in refused.value.diagnostics


@pytest.mark.parametrize("body", [b"", b"\xff\xfe{}", "{}".encode("utf-16"), b"<Bundle/>", b'{"a": 1'])
def test_a_body_that_is_not_utf8_json_is_refused_with_400(body: bytes) -> None:
    with pytest.raises(FhirError) as refused:
        parse_json(body)
    assert (refused.value.status, refused.value.code) == (400, "structure")
    assert refused.value.diagnostics.startswith("the request body is not valid JSON")


def test_a_utf8_byte_order_mark_is_allowed() -> None:
    assert parse_json(b'\xef\xbb\xbf{"resourceType": "Patient"}') == {"resourceType": "Patient"}


def test_limits_come_from_the_services_variables_over_its_defaults() -> None:
    environ = {"CN_JSON_MAX_DEPTH": "32", "CN_BODY_SECONDS": "2.5", "TC_JSON_MAX_ITEMS": "7"}
    limits = input_limits_from_environment("CN", environ, InputLimits(json_max_string_bytes=99))
    assert limits == InputLimits(json_max_depth=32, json_max_string_bytes=99, body_seconds=2.5)
    assert input_limits_from_environment("XX", {}, DEFAULT_INPUT_LIMITS) == DEFAULT_INPUT_LIMITS


@pytest.mark.parametrize(
    ("variable", "value", "kind"),
    [
        ("CN_JSON_MAX_DEPTH", "0", "int"),
        ("CN_JSON_MAX_ITEMS", "1e6", "int"),
        ("CN_JSON_MAX_STRING_BYTES", "-1", "int"),
        ("CN_BODY_SECONDS", "inf", "float"),
        ("CN_BODY_SECONDS", "soon", "float"),
    ],
)
def test_a_limit_that_is_not_a_positive_number_stops_the_service_naming_it(
    variable: str, value: str, kind: str
) -> None:
    with pytest.raises(ConfigError, match=f"{variable}='{value}': a positive {kind} is required"):
        input_limits_from_environment("CN", {variable: value}, DEFAULT_INPUT_LIMITS)


async def echo_length(request: Request) -> Response:
    try:
        body = await read_body(request, 1000)
    except FhirError as refused:
        return error_response(refused)
    return JSONResponse({"bytes": len(body), "limits": current_input_limits().json_max_depth})


def app_with(limits: InputLimits) -> Starlette:
    return Starlette(
        routes=[Route("/", echo_length, methods=["POST"])], middleware=[Middleware(ApplyInputLimits, limits=limits)]
    )


async def trickle(chunks: int, pause_s: float) -> AsyncIterator[bytes]:
    for _ in range(chunks):
        await asyncio.sleep(pause_s)
        yield b"x"


def post(app: Starlette, content: Any) -> httpx.Response:
    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
            return await client.post("/", content=content)

    return asyncio.run(send())


def test_the_services_limits_hold_while_it_serves_a_request_and_not_outside() -> None:
    answer = post(app_with(InputLimits(json_max_depth=7)), b"{}")
    assert answer.json() == {"bytes": 2, "limits": 7}
    assert current_input_limits() == DEFAULT_INPUT_LIMITS


def test_a_body_that_takes_longer_than_body_seconds_is_refused_with_408() -> None:
    answer = post(app_with(InputLimits(body_seconds=0.3)), trickle(chunks=20, pause_s=0.05))
    assert answer.status_code == 408
    [issue] = answer.json()["issue"]
    assert issue["code"] == "timeout"
    assert issue["diagnostics"] == "the request body did not arrive within 0.3 s; the limit BODY_SECONDS is 0.3"


def test_a_body_that_arrives_in_time_is_read_whole() -> None:
    answer = post(app_with(InputLimits(body_seconds=5)), trickle(chunks=5, pause_s=0.01))
    assert answer.json()["bytes"] == 5


def test_a_body_past_the_byte_limit_is_refused_with_413_however_it_arrives() -> None:
    assert post(app_with(DEFAULT_INPUT_LIMITS), b"x" * 1001).status_code == 413
    assert post(app_with(DEFAULT_INPUT_LIMITS), trickle(chunks=1001, pause_s=0)).status_code == 413
