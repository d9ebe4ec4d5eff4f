"""Portal benchmarks (issue 13): the ledger, signed-in users under load, and what the idp adds to readiness.

`portal-ledger`: the ledger (`/portal/fhir/AuditEvent`) asks the trust centre, the node's connector and
the portal's own trail, merges and sorts: it should cost little more than one plain FHIR `AuditEvent`
search that returns the same connector entries. A patient at the dic is read `LEDGER_READS` times through
the connector (each read an audit entry about them), then both paths are timed in interleaved rounds on
the bench federation.

`portal-users`: `SESSIONS` browser-like sessions, each signed in through the portal's OIDC code flow at
Keycloak's own login form, load a clinician's record page for `DURATION_S` seconds, all at once, on the
bench federation. The issue's goal is no error at all; the page's p50/p95 are the figures to watch.

`portal-ready`: `hubnode up` of a single dic node with and without idp and portal, each from nothing, in
interleaved rounds: the ratio says what Keycloak's start (and the portal's) costs a node's readiness.
"""

from __future__ import annotations

import json
import ssl
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import docker
import httpx
import yaml

from benchmarks.federation import (
    FHIR_JSON,
    TIMEOUT_S,
    Bench,
    BenchFederation,
    announce,
    free_port,
    grant_consent,
    latency_figures,
    percentile,
    run_hubnode,
    timed_post,
)
from conformance.logins import Login, access_token
from fixtures.synthetic import PatientProfile, patient_record
from infra.idp_realm import user_secret
from infra.imagebuild import build_images
from infra.plan import plan_stack
from infra.progress import Progress
from infra.spec import parse_stack
from servicekit.kvnr import KVNR_SYSTEM

BENCHMARKS = ("portal-ledger", "portal-users", "portal-ready")
LEDGER_READS = 500
ROUNDS = 30
LEDGER_SEED = 91_000
#: The site-admin demo user of the dic in Pulumi.federation.yaml: staff may read a patient's ledger.
STAFF = "desk.dic"
LEDGER_P95_RATIO_MAX = 1.5
#: portal-users: the issue's "20 concurrent signed-in users for 2 minutes".
SESSIONS = 20
DURATION_S = 120.0
PROGRESS_EVERY_S = 10.0
#: A page that takes longer counts as an error (no answer), so a stuck request cannot outlast the run.
PAGE_TIMEOUT_S = 30.0
USERS_SEED = 92_000
#: The dic's only clinician among the demo users of Pulumi.federation.yaml: every session signs in as them.
CLINICIAN = "dr.weber"
#: Keycloak's login form: its id in Keycloak's themes.
LOGIN_FORM_ID = "kc-form-login"
#: How many failed answers the result quotes (status and the start of the body or the transport error).
ERROR_EXCERPTS = 5
#: portal-ready: one dic node on the embedded databases, without and with the identity provider and portal.
READY_STACK = "bench-portal-ready"
READY_VARIANTS: Mapping[str, tuple[str, ...]] = {
    "without": ("fhir", "trustcentre", "connector", "gateway"),
    "with": ("fhir", "trustcentre", "connector", "gateway", "idp", "portal"),
}


def bench_ledger(federation: BenchFederation) -> dict[str, Any]:
    """p50/p95 of the ledger through the portal and of the connector's search for the same patient."""
    record = patient_record(PatientProfile(seed=LEDGER_SEED, site="dic", consent=()))
    kvnr = f"{KVNR_SYSTEM}|{record.person.kvnr}"
    with federation.client("dic") as connector, _staff(federation) as portal:
        timed_post(connector, "/fhir", json.dumps(record.bundle()).encode())
        grant_consent(federation, record)
        announce(f"portal-ledger: {LEDGER_READS} reads of one patient, each an audit entry")
        for _ in range(LEDGER_READS):
            _get(connector, "/fhir/Patient", {"identifier": kvnr})
        ledger = _get(portal, "/portal/fhir/AuditEvent", {"patient.identifier": kvnr})
        names = sorted(
            {
                str(entity["what"]["identifier"]["value"])
                for entry in ledger.get("entry", [])
                for entity in entry["resource"].get("entity", [])
                if "identifier" in entity.get("what", {})
            }
        )
        plain = _get(connector, "/fhir/AuditEvent", {"entity": ",".join(names)})
        timings: dict[str, list[float]] = {"portal": [], "connector": []}
        paths = {
            "portal": lambda: _get(portal, "/portal/fhir/AuditEvent", {"patient.identifier": kvnr}),
            "connector": lambda: _get(connector, "/fhir/AuditEvent", {"entity": ",".join(names)}),
        }
        announce(f"portal-ledger: {ROUNDS} interleaved rounds of both searches")
        for number in range(ROUNDS):
            for path in list(paths) if number % 2 else list(paths)[::-1]:
                started = time.perf_counter()
                paths[path]()
                timings[path].append(time.perf_counter() - started)
    figures = {path: latency_figures(seconds) for path, seconds in timings.items()}
    p95_ratio = figures["portal"]["p95_s"] / figures["connector"]["p95_s"]
    return {
        "reads": LEDGER_READS,
        "rounds": ROUNDS,
        "entries": {"portal": len(ledger.get("entry", [])), "connector": len(plain.get("entry", []))},
        **figures,
        "p95_ratio": p95_ratio,
        "target_p95_ratio_max": LEDGER_P95_RATIO_MAX,
        "met": p95_ratio <= LEDGER_P95_RATIO_MAX,
    }


def _staff(federation: BenchFederation) -> httpx.Client:
    """The dic's portal API as its desk, signed in at the node's Keycloak (password grant of local stacks)."""
    secrets = federation.state / "secrets" / "dic"
    base = f"https://127.0.0.1:{federation.gateway_ports['dic']}"
    login = Login(
        token_url=f"{base}/idp/realms/hubnode/protocol/openid-connect/token",
        client_id="portal",
        client_secret=secrets / "idp-portal-secret",
        username=STAFF,
        password=secrets / f"idp-user-{STAFF}",
    )
    ca_file = federation.state / "pki" / "ca.crt"
    token = access_token(login, ca_file)
    return httpx.Client(
        base_url=base,
        verify=ssl.create_default_context(cafile=ca_file),
        headers={"Authorization": f"Bearer {token}", "Accept": FHIR_JSON},
        timeout=TIMEOUT_S,
    )


def _get(client: httpx.Client, path: str, params: Mapping[str, str]) -> dict[str, Any]:
    """A search's Bundle; anything but 200 stops the benchmark (a figure of errors is no figure)."""
    response = client.get(path, params=dict(params))
    if response.status_code != 200:
        raise RuntimeError(f"GET {client.base_url}{path} answered {response.status_code}: {response.text[:500]}")
    answer: dict[str, Any] = response.json()
    return answer


# --- portal-users ----------------------------------------------------------------------------------


def bench_users(federation: BenchFederation) -> dict[str, Any]:
    """SESSIONS signed-in sessions load one patient's record page for DURATION_S, concurrently."""
    record = patient_record(PatientProfile(seed=USERS_SEED, site="dic", consent=()))
    with federation.client("dic") as connector:
        timed_post(connector, "/fhir", json.dumps(record.bundle()).encode())
    grant_consent(federation, record)
    portal = f"https://127.0.0.1:{federation.gateway_ports['dic']}/portal"
    page = f"{portal}/patients/kvnr/{record.person.kvnr}"
    password = (federation.state / "secrets" / "dic" / user_secret(CLINICIAN)).read_text(encoding="utf-8").strip()
    tally = Tally()
    with ExitStack() as stack:
        browsers = [stack.enter_context(_browser(federation)) for _ in range(SESSIONS)]
        announce(f"portal-users: {SESSIONS} sign-ins of {CLINICIAN} through Keycloak's login form")
        sign_ins: list[float] = []
        for browser in browsers:
            started = time.perf_counter()
            sign_in(browser, portal, CLINICIAN, password)
            sign_ins.append(time.perf_counter() - started)
            _first_load(browser, page)
        announce(f"portal-users: {SESSIONS} sessions load {page} for {DURATION_S:.0f} s")
        wall = _load_concurrently(browsers, page, tally)
    return {
        "sessions": SESSIONS,
        "user": CLINICIAN,
        "users_note": f"the demo stack has one clinician at the dic: all {SESSIONS} sessions are {CLINICIAN}, "
        "each with its own sign-in and cookie jar",
        "page": "/portal/patients/kvnr/<kvnr>",
        "record_resources": len(record.resources),
        "duration_s": DURATION_S,
        "page_timeout_s": PAGE_TIMEOUT_S,
        "sign_in_p50_s": statistics.median(sign_ins),
        "sign_in_max_s": max(sign_ins),
        **summarise(tally.answers(), wall),
        "target_error_rate": 0.0,
    }


class SignInError(Exception):
    """A step of the browser-like sign-in did not answer as the code flow should; the message says which."""


@dataclass(frozen=True)
class LoginForm:
    """Keycloak's login form: where it posts, and the hidden fields it carries along with the credentials."""

    action: str
    hidden: Mapping[str, str]


class _LoginFormParser(HTMLParser):
    """Finds the form with id LOGIN_FORM_ID, its action and the hidden inputs inside it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.action: str | None = None
        self.hidden: dict[str, str] = {}
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form" and values.get("id") == LOGIN_FORM_ID:
            self.action = values.get("action") or None
            self._inside = True
        elif tag == "input" and self._inside and values.get("type") == "hidden" and values.get("name"):
            self.hidden[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False


def login_form(page: str) -> LoginForm:
    """The login form on Keycloak's login page (entities in its action resolved); SignInError without one."""
    parser = _LoginFormParser()
    parser.feed(page)
    parser.close()
    if parser.action is None:
        raise SignInError(f"no login form (form#{LOGIN_FORM_ID} with an action) on the page: {page[:300]!r}")
    return LoginForm(parser.action, dict(parser.hidden))


def sign_in(browser: httpx.Client, portal: str, username: str, password: str) -> None:
    """What a browser does: the portal's /login, Keycloak's form, back to the portal's callback; a session cookie.

    `browser` must not follow redirects: each hop is checked. Afterwards its cookie jar holds the
    portal's session cookie (and Keycloak's own), as a browser's would.
    """
    to_idp = _expect(browser.get(f"{portal}/login"), (302, 303), "the portal's /login")
    form_page = _expect(browser.get(_location(to_idp)), (200,), "Keycloak's login page")
    form = login_form(form_page.text)
    posted = browser.post(
        urljoin(str(form_page.url), form.action), data={**form.hidden, "username": username, "password": password}
    )
    back = _expect(posted, (302, 303), f"Keycloak's login form for {username}")
    callback = _location(back)
    if not callback.startswith(f"{portal}/auth/callback?"):
        raise SignInError(f"Keycloak sent {username} to {callback[:200]}, not to the portal's callback")
    _expect(browser.get(callback), (302, 303), "the portal's callback")
    if not any(cookie.path.startswith("/portal") for cookie in browser.cookies.jar):
        raise SignInError(f"the portal's callback set no session cookie for {username}")


def _expect(response: httpx.Response, statuses: Sequence[int], step: str) -> httpx.Response:
    if response.status_code not in statuses:
        raise SignInError(f"{step} answered {response.status_code}: {response.text[:300]}")
    return response


def _location(response: httpx.Response) -> str:
    """Where a redirect points, made absolute against the request's URL."""
    return urljoin(str(response.request.url), response.headers["location"])


def _browser(federation: BenchFederation) -> httpx.Client:
    """One browser: its own cookie jar and connections, the bench PKI's CA, no automatic redirects."""
    return httpx.Client(
        verify=ssl.create_default_context(cafile=federation.state / "pki" / "ca.crt"),
        timeout=PAGE_TIMEOUT_S,
        follow_redirects=False,
    )


def _first_load(browser: httpx.Client, page: str) -> None:
    """An untimed first load: a session that cannot see the page at all is a broken set-up, not a load figure."""
    response = browser.get(page)
    if response.status_code != 200:
        raise RuntimeError(f"GET {page} after sign-in answered {response.status_code}: {response.text[:500]}")


@dataclass(frozen=True)
class Answer:
    """One load of the page: its HTTP status (0: no answer), seconds until the whole body was read, why it failed."""

    status: int
    seconds: float
    error: str = ""

    @property
    def failed(self) -> bool:
        """Anything but 200 is an error, a transport error too."""
        return self.status != 200


class Tally:
    """Answers from all sessions; a lock lets progress lines count them while the sessions add more."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: list[Answer] = []

    def add(self, answer: Answer) -> None:
        """Record one answer."""
        with self._lock:
            self._answers.append(answer)

    def counts(self) -> tuple[int, int]:
        """Requests and errors so far."""
        with self._lock:
            return len(self._answers), sum(answer.failed for answer in self._answers)

    def answers(self) -> list[Answer]:
        """All answers so far, in the order they came."""
        with self._lock:
            return list(self._answers)


def _load_concurrently(browsers: Sequence[httpx.Client], page: str, tally: Tally) -> float:
    """Every browser loads `page` in a loop on its own thread for DURATION_S; wall seconds until all stopped."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=_load, args=(browser, page, tally, stop), name=f"portal-user-{number}", daemon=True)
        for number, browser in enumerate(browsers, start=1)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    try:
        for elapsed in _ticks(started):
            requests, errors = tally.counts()
            announce(f"portal-users: {elapsed:.0f} s, {requests} requests, {errors} errors")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return time.perf_counter() - started


def _ticks(started: float) -> Iterator[float]:
    """Seconds since `started`, every PROGRESS_EVERY_S until DURATION_S have passed."""
    while (left := started + DURATION_S - time.perf_counter()) > 0:
        time.sleep(min(PROGRESS_EVERY_S, left))
        yield time.perf_counter() - started


def _load(browser: httpx.Client, page: str, tally: Tally, stop: threading.Event) -> None:
    while not stop.is_set():
        tally.add(_fetch(browser, page))


def _fetch(browser: httpx.Client, page: str) -> Answer:
    started = time.perf_counter()
    try:
        response = browser.get(page)
    except httpx.HTTPError as exc:
        return Answer(0, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"[:300])
    elapsed = time.perf_counter() - started
    return Answer(response.status_code, elapsed, "" if response.status_code == 200 else response.text[:300])


def summarise(answers: Sequence[Answer], wall_s: float) -> dict[str, Any]:
    """Requests, errors and their rate, throughput, and the page's p50/p95/max over its 200 answers.

    `met` (the issue's goal, error rate 0) needs at least one request: a run that sent none proves nothing.
    """
    seconds = [answer.seconds for answer in answers if not answer.failed]
    failed = [answer for answer in answers if answer.failed]
    return {
        "requests": len(answers),
        "errors": len(failed),
        "error_rate": len(failed) / len(answers) if answers else None,
        "statuses": {str(status): count for status, count in sorted(Counter(a.status for a in answers).items())},
        "error_excerpts": [f"{answer.status or 'no answer'}: {answer.error}" for answer in failed[:ERROR_EXCERPTS]],
        "wall_s": wall_s,
        "requests_per_s": len(answers) / wall_s,
        "p50_s": statistics.median(seconds) if seconds else None,
        "p95_s": _p95(seconds),
        "max_s": max(seconds) if seconds else None,
        "met": bool(answers) and not failed,
    }


def _p95(seconds: Sequence[float]) -> float | None:
    if len(seconds) < 2:  # interpolation needs two samples; one is its own p95
        return seconds[0] if seconds else None
    return percentile(seconds, 95)


#: The benchmarks run on the bench federation, in this order after its own (each adds audit entries at
#: the dic: portal-users many thousands, which the ledger's searches should not have to wade through).
FEDERATED: Mapping[str, Bench] = {"portal-ledger": bench_ledger, "portal-users": bench_users}


# --- portal-ready ----------------------------------------------------------------------------------


def ready_config(components: Sequence[str], gateway_port: int, peer_port: int) -> dict[str, Any]:
    """The stack config of one local dic node on the embedded databases running `components`.

    The portal needs no demo user to start (a site's users live in its Keycloak), so neither variant has one:
    the two differ in their components alone.
    """
    return {
        "hubnode:environment": "local",
        "hubnode:site": "bench",
        "hubnode:role": "dic",
        "hubnode:components": list(components),
        "hubnode:database": "embedded",
        "hubnode:federation": {"name": "bench-ready", "domain": "hubnode.test"},
        "hubnode:domains": [{"name": "dic-patients", "prefix": "DIC"}],
        "hubnode:ports": {"gateway": gateway_port, "peer": peer_port},
    }


def bench_ready(client: docker.DockerClient, rounds: int) -> dict[str, Any]:
    """`hubnode up` of a new dic node until every health check passes, without vs with idp and portal.

    The images are built first, so no round times a build; the variants swap places each round, so
    neither always comes first on a machine that is warming up or busy.
    """
    widest = ready_config(READY_VARIANTS["with"], free_port(), free_port())
    build_images(client, plan_stack(parse_stack(READY_STACK, widest)), Progress())
    seconds: dict[str, list[float]] = {variant: [] for variant in READY_VARIANTS}
    for number in range(rounds):
        order = list(READY_VARIANTS) if number % 2 == 0 else list(READY_VARIANTS)[::-1]
        for variant in order:
            announce(f"portal-ready round {number + 1}/{rounds}: hubnode up {variant} idp and portal")
            seconds[variant].append(_time_up(READY_VARIANTS[variant]))
    p50 = {variant: statistics.median(values) for variant, values in seconds.items()}
    return {
        "rounds": rounds,
        "components": {variant: list(components) for variant, components in READY_VARIANTS.items()},
        "without_s": seconds["without"],
        "with_s": seconds["with"],
        "p50_without_s": p50["without"],
        "p50_with_s": p50["with"],
        "ratio": p50["with"] / p50["without"],
    }


def _time_up(components: Sequence[str]) -> float:
    """Seconds `hubnode up` took for a node of `components` in a new project folder; then `down --volumes`."""
    with tempfile.TemporaryDirectory(prefix="hubnode-bench-ready-") as folder:
        project = Path(folder)
        (project / "Pulumi.yaml").write_text("name: hubnode\nruntime: python\n")
        config = ready_config(components, free_port(), free_port())
        parse_stack(READY_STACK, config)  # a spec the launcher refuses is a bug here, not a slow start
        (project / f"Pulumi.{READY_STACK}.yaml").write_text(yaml.safe_dump({"config": config}))
        started = time.perf_counter()
        try:
            run_hubnode(project, "up", "--stack", READY_STACK)
            return time.perf_counter() - started
        finally:
            run_hubnode(project, "down", "--stack", READY_STACK, "--volumes")


# --- table -----------------------------------------------------------------------------------------


def table_rows(results: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Rows for the printed table: each portal benchmark that ran, its figures and its target."""
    rows: list[tuple[str, str, str]] = []
    if "portal-ledger" in results:
        rows += _ledger_rows(results["portal-ledger"])
    if "portal-users" in results:
        rows += _users_rows(results["portal-users"])
    if "portal-ready" in results:
        rows += _ready_rows(results["portal-ready"])
    return rows


def _ledger_rows(ledger: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    rows = [
        (
            f"portal-ledger: {path} p50, p95",
            f"{ledger[path]['p50_s'] * 1000:.0f}, {ledger[path]['p95_s'] * 1000:.0f} ms",
            f"{ledger['entries'][path]} entries, {ledger['rounds']} rounds",
        )
        for path in ("portal", "connector")
    ]
    verdict = "met" if ledger["met"] else "NOT met"
    rows.append(
        ("portal-ledger: p95 ratio", f"{ledger['p95_ratio']:.2f}", f"target <= {LEDGER_P95_RATIO_MAX}: {verdict}")
    )
    return rows


def _users_rows(users: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    figures = (users[key] for key in ("p50_s", "p95_s", "max_s"))
    latency = ", ".join("-" if seconds is None else f"{seconds * 1000:.0f}" for seconds in figures)
    verdict = "met" if users["met"] else "NOT met"
    return [
        (
            "portal-users: record page p50, p95, max",
            f"{latency} ms",
            f"{users['sessions']} sessions of {users['user']}, {users['duration_s']:.0f} s",
        ),
        (
            "portal-users: requests, errors",
            f"{users['requests']}, {users['errors']}",
            f"{users['requests_per_s']:.1f} pages/s; target error rate 0: {verdict}",
        ),
    ]


def _ready_rows(ready: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (
            f"portal-ready: hubnode up {variant} idp, portal (p50)",
            f"{ready[f'p50_{variant}_s']:.1f} s",
            f"{ready['rounds']} rounds",
        )
        for variant in ("without", "with")
    ] + [("portal-ready: ratio with / without", f"{ready['ratio']:.2f}", "what Keycloak's start costs")]
