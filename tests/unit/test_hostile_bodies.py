"""Hostile bodies at every body-taking route of the connector and the trust centre: never a 5xx, nothing stored.

Deep, wide and long JSON (hypothesis), bare or inside the resource a route expects, against each route
of apps with small input limits (so examples stay small), and the bodies of issue 18 against apps
with the default limits. Every refusal must be a 4xx OperationOutcome, a body past a limit a 413
naming it, and the stores must stay as they were. `--hypothesis-show-statistics` counts what was tried.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, inspect, select, table
from starlette.testclient import TestClient

from connector.allowlist import NodeRole
from connector.app import create_app as create_connector
from connector.auth import Role
from servicekit.auth import Authenticator, Caller, token_hash
from servicekit.limits import DEFAULT_INPUT_LIMITS, InputLimits
from tests.unit.connector.conftest import connector_settings
from tests.unit.connector.fake_fhir import FakeFhir
from tests.unit.connector.federation import PROCESS, Federation, federation, value
from tests.unit.trustcentre.conftest import headers as trustcentre_headers
from tests.unit.trustcentre.conftest import settings as trustcentre_settings
from trustcentre.app import create_app as create_trustcentre

SMALL = InputLimits(json_max_depth=64, json_max_items=2_000, json_max_string_bytes=2_000)
LIMIT_NAMES = ("JSON_MAX_DEPTH", "JSON_MAX_ITEMS", "JSON_MAX_STRING_BYTES")
#: How a refusal for the body's size (a Settings field of each service, not one of the input limits) reads.
TOO_LARGE = "the request body is larger than"
TRUSTCENTRE = "/ttp-fhir/fhir"
CALLERS = {"source": frozenset({Role.INGEST}), "starter": frozenset({Role.PROCESS})}
AUDIT_TABLES = frozenset({"audit_events", "audit_subjects", "schema_version"})


@functools.cache
def measured(body: bytes) -> tuple[int, int, int]:
    """Depth, items and longest string (bytes as written) of a JSON text, walked a byte at a time.

    An independent oracle for the service's measure: a plain state machine, no regular expressions.
    """
    depth = deepest = items = longest = length = 0
    opened: list[bool] = []  # per open array or object: has it an item yet?
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped or byte != ord('"'):
                escaped = not escaped and byte == ord("\\")
                length += 1
            else:
                in_string, longest = False, max(longest, length)
            continue
        if byte in b" \t\r\n":
            continue
        if opened and not opened[-1] and byte not in b"]}":
            opened[-1] = True
            items += 1
        if byte == ord('"'):
            in_string, length = True, 0
        elif byte in b"[{":
            opened.append(False)
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}" and opened:
            opened.pop()
            depth -= 1
        elif byte == ord(","):
            items += 1
    return deepest, items, longest


def passed_limits(body: bytes, limits: InputLimits, max_body_bytes: int) -> set[str]:
    """How the refusals of the limits `body` goes past read."""
    bounds = (limits.json_max_depth, limits.json_max_items, limits.json_max_string_bytes)
    passed = {
        f"the limit {name} is"
        for name, size, bound in zip(LIMIT_NAMES, measured(body), bounds, strict=True)
        if size > bound
    }
    return passed | {TOO_LARGE} if len(body) > max_body_bytes else passed


def nested(depth: int, brackets: tuple[bytes, bytes]) -> bytes:
    opening, closing = brackets
    return opening * depth + b"0" + closing * depth


DEEP = st.builds(
    nested,
    st.integers(1, 100) | st.integers(100, 60_000),
    st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'[{"b":', b"}]"), (b'{"extension":[', b"]}")]),
)
WIDE = st.builds(
    lambda count, item: b"[" + b",".join([item] * count) + b"]",
    st.integers(0, 2_500),
    st.sampled_from([b"0", b"[]", b"{}", b'"x"', b'{"k":0}', b"[0,[0]]", b"1e999999", b"null", b"-0.5e-7"]),
)
MEMBERS = st.builds(lambda count: b"{" + b",".join(b'"k%d":[]' % i for i in range(count)) + b"}", st.integers(0, 2_500))
LONG = st.builds(
    lambda count, unit: b'"' + unit * count + b'"',
    st.integers(0, 2_200),
    st.sampled_from([b"a", b'\\"', b"\\u00e4", "\u00e4".encode(), b"\\\\"]),
)
#: A hostile JSON value: deep, wide or long, or an array of a few such.
HOSTILE = st.one_of(DEEP, WIDE, MEMBERS, LONG).flatmap(
    lambda first: st.one_of(
        st.just(first), st.lists(st.one_of(DEEP, WIDE, LONG), max_size=3).map(lambda more: b",".join([first, *more]))
    ).map(lambda items: items if items == first else b"[" + items + b"]")
)


@dataclass(frozen=True)
class BodyRoute:
    """A route that takes a body, how to wrap a hostile value in what it expects, and how to call it."""

    name: str
    wrap: Callable[[bytes], bytes]
    send: Callable[[bytes], httpx.Response]
    store: Callable[[], object]
    max_body_bytes: int


def in_resource(resource_type: str) -> Callable[[bytes], bytes]:
    """The value in an element no resource has, so a body within the limits is still refused (and stores nothing)."""
    return lambda hostile: b'{"resourceType":"%s","id":"p","hostile":%s}' % (resource_type.encode(), hostile)


def in_bundle(hostile: bytes) -> bytes:
    return b'{"resourceType":"Bundle","type":"transaction","entry":[{"resource":%s}]}' % in_resource("Patient")(hostile)


def as_ndjson(hostile: bytes) -> bytes:
    return in_resource("Patient")(hostile) + b"\n" + hostile + b"\n"


def rows(engine: Engine) -> dict[str, int]:
    """Rows per table but the audit trail's (refusals are audited; nothing else may change)."""
    names = sorted(set(inspect(engine).get_table_names()) - AUDIT_TABLES)
    with engine.connect() as connection:
        return {name: connection.execute(select(func.count()).select_from(table(name))).scalar_one() for name in names}


def fhir_store(fhir: FakeFhir) -> tuple[str, int]:
    return json.dumps(fhir.resources, sort_keys=True), len(fhir.transactions)


@dataclass
class Services:
    """The connector (with its fake HAPI), a peer sending to it, and the trust centre, under one set of limits."""

    routes: dict[str, BodyRoute]
    fed: Federation


def services(folder: Path, limits: InputLimits) -> Iterator[Services]:
    trustcentre_app = create_trustcentre(
        replace(trustcentre_settings(f"sqlite:///{folder / 'trustcentre.db'}"), input_limits=limits)
    )
    trustcentre_transport = httpx.ASGITransport(app=trustcentre_app)
    fhir = FakeFhir()
    callers = {token_hash(f"token-of-{name}"): Caller(name, roles) for name, roles in CALLERS.items()}
    settings = connector_settings(folder, authenticator=Authenticator(callers, {}), input_limits=limits)
    connector = create_connector(settings, hapi_transport=fhir.transport(), trustcentre_transport=trustcentre_transport)
    fed = federation(
        folder, trustcentre_transport, {"dic": NodeRole.DIC, "practice": NodeRole.PRACTICE}, input_limits=limits
    )
    dic = fed["dic"]
    peer_headers = fed.gateway_headers(dic, fed["practice"].issued)

    def connector_store() -> object:
        return fhir_store(fhir), rows(connector.state.engine), fhir_store(dic.fhir), rows(dic.app.state.engine)

    def trustcentre_store() -> object:
        return rows(trustcentre_app.state.engine)

    with TestClient(connector, raise_server_exceptions=False) as client, TestClient(trustcentre_app) as tc:

        def post(path: str, who: str, content_type: str = "application/fhir+json") -> Callable[[bytes], httpx.Response]:
            auth = {"Authorization": f"Bearer token-of-{who}", "Content-Type": content_type}
            return lambda body: client.post(path, content=body, headers=auth)

        def operation(path: str) -> Callable[[bytes], httpx.Response]:
            return lambda body: tc.post(f"{TRUSTCENTRE}/{path}", content=body, headers=trustcentre_headers("admin"))

        routes = [
            BodyRoute("ingest", in_bundle, post("/fhir", "source"), connector_store, settings.max_body_bytes),
            BodyRoute(
                "import",
                as_ndjson,
                post("/fhir/$import", "source", "application/fhir+ndjson"),
                connector_store,
                settings.max_body_bytes,
            ),
            BodyRoute(
                "start-process",
                in_resource("Task"),
                post("/fhir/Task", "starter"),
                connector_store,
                settings.max_body_bytes,
            ),
            BodyRoute(
                "peer-task",
                in_resource("Task"),
                lambda body: dic.client.post("/peer/fhir/Task", content=body, headers=peer_headers),
                connector_store,
                dic.app.state.settings.max_body_bytes,
            ),
        ]
        for service in ("gpas", "gics", "epix"):
            listed = tc.get(f"{TRUSTCENTRE}/{service}/metadata").json()["rest"][0]["operation"]
            routes += [
                BodyRoute(
                    f"{service}/${o['name']}",
                    in_resource("Parameters"),
                    operation(f"{service}/${o['name']}"),
                    trustcentre_store,
                    trustcentre_app.state.max_body_bytes,
                )
                for o in listed
            ]
        yield Services({route.name: route for route in routes}, fed)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    yield from services(tmp_path_factory.mktemp("small"), SMALL)


@pytest.fixture(scope="module")
def defaults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    yield from services(tmp_path_factory.mktemp("defaults"), DEFAULT_INPUT_LIMITS)


def answered_safely(route: BodyRoute, body: bytes, limits: InputLimits) -> httpx.Response:
    """Send `body`; assert no 5xx, a refusal as an OperationOutcome (413 naming a limit the body passes), no change.

    A body within the limits may be answered 2xx by a route that needs nothing from it (`$possibleMatches`);
    the wrappers never make one a valid write, so the stores must stay as they were whatever the answer.
    """
    before = route.store()
    answer = route.send(body)
    assert answer.status_code < 500, (route.name, answer.status_code, answer.text[:300])
    passed = passed_limits(body, limits, route.max_body_bytes)
    if passed or answer.status_code >= 400:
        outcome = answer.json()
        assert outcome["resourceType"] == "OperationOutcome", (route.name, outcome)
        diagnostics = " ".join(issue.get("diagnostics", "") for issue in outcome["issue"])
        if passed:
            assert answer.status_code == 413, (route.name, passed, diagnostics)
            assert any(refusal in diagnostics for refusal in passed), (route.name, passed, diagnostics)
        else:
            assert not any(name in diagnostics for name in LIMIT_NAMES), (route.name, diagnostics)
    assert route.store() == before, f"{route.name} changed a store"
    return answer


CONNECTOR_ROUTES = ("ingest", "import", "start-process", "peer-task")


@pytest.mark.parametrize("name", CONNECTOR_ROUTES)
@settings(max_examples=60)
@given(hostile=HOSTILE, bare=st.booleans())
def test_hostile_json_at_a_connector_route_gets_no_5xx_and_stores_nothing(
    small: Services, name: str, hostile: bytes, bare: bool
) -> None:
    route = small.routes[name]
    answered_safely(route, hostile if bare else route.wrap(hostile), SMALL)


@settings(max_examples=120)
@given(hostile=HOSTILE, bare=st.booleans(), data=st.data())
def test_hostile_json_at_any_trust_centre_operation_gets_no_5xx_and_stores_nothing(
    small: Services, hostile: bytes, bare: bool, data: st.DataObject
) -> None:
    operations = sorted(name for name in small.routes if name not in CONNECTOR_ROUTES)
    route = small.routes[data.draw(st.sampled_from(operations))]
    answered_safely(route, hostile if bare else route.wrap(hostile), SMALL)


#: The bodies of issue 18, at the default limits: 50,000 nested arrays answered 500 before.
ISSUE_BODIES = {
    "50000-nested-arrays": b"[" * 50_000 + b"]" * 50_000,
    "nested-in-resource": in_resource("Bundle")(nested(50_000, (b"[", b"]"))),
    "over-a-million-items": b"[" + b"0," * 1_000_000 + b"0]",
    "string-over-1-MiB": b'{"resourceType":"Parameters","id":"' + b"x" * (1024 * 1024 + 1) + b'"}',
    "invalid-utf-8": b'{"resourceType":"\xff\xfe"}',
    "xml": b'<Bundle xmlns="http://hl7.org/fhir"><type value="transaction"/></Bundle>',
    "empty": b"",
    "huge-number": b'{"resourceType":"Parameters","parameter":[{"name":"original","valueInteger":1e999999}]}',
}


@pytest.mark.parametrize("body", ISSUE_BODIES.values(), ids=ISSUE_BODIES.keys())
def test_the_issues_hostile_bodies_get_no_5xx_at_any_route(defaults: Services, body: bytes) -> None:
    for route in defaults.routes.values():
        answered_safely(route, body, DEFAULT_INPUT_LIMITS)


def test_a_bundle_in_a_peer_task_past_a_limit_fails_the_task_naming_it_and_stores_nothing(small: Services) -> None:
    dic, practice = small.fed["dic"], small.fed["practice"]
    bundle = in_bundle(nested(100, (b"[", b"]")))
    task = {
        "resourceType": "Task",
        "instantiatesCanonical": f"{PROCESS}careSummary|1.0",
        "status": "requested",
        "intent": "order",
        "identifier": [{"system": "https://hubnode.org/fhir/sid/idempotency-key", "value": "deep-1"}],
        "requester": {"identifier": {"system": "http://dsf.dev/sid/organization-identifier", "value": "practice"}},
        "input": [
            value(
                "bundle",
                "valueAttachment",
                {"contentType": "application/fhir+json", "data": base64.b64encode(bundle).decode()},
            )
        ],
    }
    before = fhir_store(dic.fhir)
    answer = dic.client.post(
        "/peer/fhir/Task", content=json.dumps(task), headers=small.fed.gateway_headers(dic, practice.issued)
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "failed"
    depth = measured(bundle)[0]
    assert f"nests JSON {depth} levels deep; the limit JSON_MAX_DEPTH is 64" in answer.json()["statusReason"]["text"]
    assert fhir_store(dic.fhir) == before
