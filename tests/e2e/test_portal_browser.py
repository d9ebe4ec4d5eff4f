"""The portal in a real browser: Debian's Chromium driven by Playwright, against the local federation.

A patient signs in through Keycloak's login page, links her account with the code the hospital's desk
issued, sees which project used her data after a dataSend (also as the research node recorded it),
withdraws research use and sees what it now blocks (and the next extract is refused); a GP sees a
summary from two nodes with the interaction warning; refusals (another patient's id in the URL, missing
treatment consent, a session that is gone) show a clear page, and a GP opens a record without consent
in an emergency, stating why (recorded so). Screenshots of the main pages go to
`.hubnode/reports/portal/`, with `index.html` showing them in the order taken, each with its caption and
the page's address.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from jinja2 import Environment
from playwright.sync_api import Browser, Page, expect, sync_playwright

from connector.tasks import Process, parameter
from fixtures.synthetic import PatientProfile, patient_record
from tests.conftest import PROJECT_DIR
from tests.e2e.conftest import KVNR_SYSTEM, Federation, patient_input, target_input

SCREENSHOTS = PROJECT_DIR / ".hubnode" / "reports" / "portal"
GALLERY = Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Portal in the browser: screenshots</title>
<style>body{font-family:sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}
figure{display:inline-block;vertical-align:top;margin:0 1.5rem 2rem 0;max-width:440px}
img{width:420px;border:1px solid #999}figcaption{font-size:.9rem}code{word-break:break-all}</style></head>
<body><h1>Portal in the browser</h1>
<p>Taken by <code>tests/e2e/test_portal_browser.py</code> (Chromium, German locale, a phone-sized window).</p>
{% for shot in shots %}<figure><img src="{{ shot.name }}.png" alt="{{ shot.caption }}">
<figcaption><strong>{{ shot.caption }}</strong><br><code>{{ shot.url }}</code></figcaption></figure>
{% endfor %}</body></html>
"""
)
#: A closed network: no background traffic, no component updates, no sync.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass(frozen=True)
class Shot:
    name: str
    caption: str
    url: str


#: The screenshots taken so far in this module, in order.
TAKEN: list[Shot] = []


@pytest.fixture(scope="module", autouse=True)
def gallery() -> Iterator[None]:
    """Screenshots of this run only; their page, `index.html`, is written when the module ends."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    TAKEN.clear()
    yield
    (SCREENSHOTS / "index.html").write_text(GALLERY.render(shots=TAKEN), encoding="utf-8")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is missing: `hubnode bootstrap` installs it"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # The gateways' certificates come from the federation's own CA, which this browser profile does not know.
    context = browser.new_context(ignore_https_errors=True, locale="de-DE", viewport={"width": 420, "height": 860})
    opened = context.new_page()
    yield opened
    context.close()


def portal(federation: Federation, site: str) -> str:
    return f"https://127.0.0.1:{federation.gateway_ports[site]}/portal"


def sign_in(page: Page, federation: Federation, site: str, username: str) -> None:
    """Through the portal's button and Keycloak's own login form."""
    page.goto(f"{portal(federation, site)}/")
    page.get_by_role("link", name="Anmelden").first.click()
    page.locator("#username").fill(username)
    page.locator("#password").fill(federation.secret(site, f"idp-user-{username}"))
    page.locator("#kc-login").click()
    expect(page.get_by_role("button", name="Abmelden")).to_be_visible()


def shot(page: Page, name: str, caption: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    TAKEN.append(Shot(name, caption, page.url))


def enrol(page: Page, federation: Federation, mrn: str) -> None:
    """The dic's desk issues a code for `mrn`; anna, signed in, redeems it."""
    site = "dic"
    sign_in(page, federation, site, "desk.dic")
    page.goto(f"{portal(federation, site)}/staff/enrolments")
    page.get_by_label(re.compile("Patientennummer dieser Einrichtung / KVNR")).fill(mrn)
    page.get_by_role("button", name="Code ausstellen").click()
    code = page.locator("#enrolment-code").inner_text()
    shot(page, "staff-enrolment-code", "Site staff issue an enrolment code for the patient's letter")
    page.get_by_role("button", name="Abmelden").click()
    sign_in(page, federation, site, "anna")
    page.goto(f"{portal(federation, site)}/me/enrol")
    page.get_by_label("Freischaltcode").fill(code)
    page.get_by_role("button", name="Zugang freischalten").click()
    expect(page.get_by_text("Ihr Zugang ist jetzt Ihrer Person zugeordnet.")).to_be_visible()


def test_a_patient_sees_the_project_that_used_her_data_withdraws_research_use_and_sees_the_effect(
    federation: Federation, page: Page
) -> None:
    record = patient_record(PatientProfile(seed=13101, site="dic", conditions=("C50.4",), consent=()))
    person = record.person
    assert federation.ingest("dic", record.bundle()).status_code == 200
    federation.grant({"system": KVNR_SYSTEM, "value": person.kvnr}, "2", "3", "5", "6", "7", "8")
    extract = [
        target_input("research"),
        patient_input(KVNR_SYSTEM, person.kvnr),
        parameter("project", "valueString", "demo-study"),
    ]
    sent = federation.start(
        "dic",
        Process.DATA_SEND,
        extract,
        "portal-e2e-anna-1",
    )
    assert sent["status"] == "completed", sent
    enrol(page, federation, person.mrn)

    page.goto(f"{portal(federation, 'dic')}/me/ledger")
    expect(page.locator(".project", has_text="demo-study").first).to_contain_text("Demonstrationsstudie")
    received = page.locator("tr", has_text="Standort research")
    expect(received.first).to_contain_text("dataSend")  # as the research node recorded it, asked with a ticket
    expect(received.first).to_contain_text("Demonstrationsstudie")
    shot(page, "patient-ledger", "The patient's ledger: who used her data, the research project named")

    page.goto(f"{portal(federation, 'dic')}/me/consents")
    shot(page, "patient-consents", "The patient's consents, per policy, before the withdrawal")
    research = page.locator("li.policy", has_text="Medizinische Daten wissenschaftlich nutzen")
    research.get_by_role("button", name="Widerrufen").click()
    expect(page.locator(".receipt")).to_contain_text("dataSend")
    shot(page, "patient-receipt", "The signed receipt of the withdrawal, with the processes it now blocks")
    page.goto(f"{portal(federation, 'dic')}/me/consents")
    expect(research.locator(".state")).to_have_text("widerrufen oder abgelehnt")

    refused = federation.start(
        "dic",
        Process.DATA_SEND,
        extract,
        "portal-e2e-anna-2",
    )
    assert refused["status"] == "failed", refused

    page.goto(f"{portal(federation, 'dic')}/patients/kvnr/{'A' + '0' * 9}")
    expect(page.get_by_role("alert")).to_contain_text("Seite ist für Ihre Rolle nicht freigegeben")


def test_a_gp_sees_a_summary_from_two_nodes_with_the_interaction_warning(federation: Federation, page: Page) -> None:
    hospital = patient_record(PatientProfile(seed=18101, site="dic", medications=("B01AA03",), consent=()))
    practice = patient_record(PatientProfile(seed=18101, site="practice", medications=("M01AE01",), consent=()))
    assert federation.ingest("dic", hospital.bundle()).status_code == 200
    assert federation.ingest("practice", practice.bundle()).status_code == 200
    federation.grant({"system": KVNR_SYSTEM, "value": hospital.person.kvnr}, "2", "3", "5", "6", "7")
    task = federation.start(
        "dic",
        Process.CARE_SUMMARY,
        [target_input("practice"), patient_input(KVNR_SYSTEM, hospital.person.kvnr)],
        "portal-e2e-gp",
    )
    assert task["status"] == "completed", task
    sign_in(page, federation, "practice", "dr.schulz")
    page.goto(f"{portal(federation, 'practice')}/patients")
    page.get_by_label(re.compile("^KVNR / ")).fill(hospital.person.kvnr)
    page.get_by_role("button", name="Suchen").click()
    expect(page.locator(".warning")).to_contain_text("Warfarin und Ibuprofen")
    expect(page.locator("td.source", has_text="dic").first).to_be_visible()
    expect(page.locator("td.source", has_text="practice").first).to_be_visible()
    shot(page, "clinician-summary", "A GP's cross-sector summary: entries from two nodes and the interaction warning")


def test_refusals_are_clear_pages(federation: Federation, page: Page) -> None:
    record = patient_record(PatientProfile(seed=18202, site="practice", consent=()))
    assert federation.ingest("practice", record.bundle()).status_code == 200
    federation.grant({"system": KVNR_SYSTEM, "value": record.person.kvnr}, "2", "3", "6", "7")  # no .5
    sign_in(page, federation, "practice", "dr.schulz")
    page.goto(f"{portal(federation, 'practice')}/patients/kvnr/{record.person.kvnr}")
    expect(page.get_by_role("alert")).to_contain_text("Teil 5 der Einwilligung")
    shot(
        page,
        "clinician-refused-no-consent",
        "Refused: the patient has not consented to treatment-data exchange (policy 5)",
    )
    # in an emergency the GP opens the record anyway, stating why: flagged on the page and in every record
    page.get_by_label("Begründung").fill("Bewusstlos in der Praxis, Medikation unbekannt")
    page.get_by_label("Ich bestätige, dass ein Notfall vorliegt.").check()
    page.get_by_role("button", name="Notfallzugriff starten").click()
    expect(page.locator(".emergency")).to_contain_text("Bewusstlos in der Praxis, Medikation unbekannt")
    shot(page, "clinician-emergency-access", "Emergency access: the record opened with a stated reason, flagged")
    today = datetime.now(UTC).date().isoformat()
    flagged = [
        event["purposeOfEvent"][0]
        for event in federation.search("practice", f"AuditEvent?date=ge{today}")
        if event.get("purposeOfEvent", [{}])[0].get("text") == "Bewusstlos in der Praxis, Medikation unbekannt"
    ]
    assert flagged, "the practice's connector records each read of the record with the reason"
    assert {purpose["coding"][0]["code"] for purpose in flagged} == {"ETREAT"}
    # the session is gone on the server (ended, or idle too long): the browser's cookie names nothing any more
    page.context.clear_cookies()
    page.context.add_cookies(
        [
            {
                "name": "hubnode_portal",
                "value": "a-session-the-portal-no-longer-knows",
                "domain": "127.0.0.1",
                "path": "/portal",
                "secure": True,
                "httpOnly": True,
            }
        ]
    )
    page.goto(f"{portal(federation, 'practice')}/patients")
    expect(page.get_by_role("alert")).to_contain_text("Sitzung ist abgelaufen")
    shot(page, "session-expired", "Refused: the session is gone on the server")
