from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import MII_KDS_DIR
from trustcentre.mii_consent import (
    MII_CONSENT_PROFILE,
    MII_POLICY_CODES,
    POLICY_SYSTEM,
    ConsentInvalid,
    MiiConsent,
    PolicyProvision,
    parse_mii_consent,
    withdrawal_consent,
)

OID = POLICY_SYSTEM.removeprefix("urn:oid:")
IDAT_COLLECT, MDAT_COLLECT, MDAT_RESEARCH, BIOMAT_COLLECT = f"{OID}.2", f"{OID}.6", f"{OID}.8", f"{OID}.19"
KNOWN = ", ".join(MII_POLICY_CODES)


def policy(
    code: str, start: str = "2024-02-23", end: str | None = "2054-01-31", kind: str = "permit"
) -> dict[str, Any]:
    period = {"start": start} if end is None else {"start": start, "end": end}
    return {"type": kind, "period": period, "code": [{"coding": [{"system": POLICY_SYSTEM, "code": code}]}]}


def consent_resource(*policies: dict[str, Any]) -> dict[str, Any]:
    """A Broad Consent shaped like the MII test data, permitting MDAT collection and research use by default."""
    return {
        "resourceType": "Consent",
        "meta": {"profile": [MII_CONSENT_PROFILE]},
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]},
        "category": [
            {"coding": [{"system": "http://loinc.org", "code": "57016-8"}]},
            {
                "coding": [
                    {
                        "system": "https://www.medizininformatik-initiative.de/fhir/modul-consent/CodeSystem/mii-cs-consent-version-modules",
                        "code": "2.16.840.1.113883.3.1937.777.24.2.184",
                    }
                ]
            },
        ],
        "patient": {"reference": "Patient/p-1"},
        "dateTime": "2024-02-23T12:00:00+01:00",
        "policy": [{"uri": "urn:oid:2.16.840.1.113883.3.1937.777.24.2.1791"}],
        "provision": {
            "type": "deny",
            "period": {"start": "2024-02-23", "end": "2054-01-31"},
            "provision": list(policies) or [policy(MDAT_COLLECT), policy(MDAT_RESEARCH)],
        },
    }


def problems_of(resource: Any) -> list[str]:
    with pytest.raises(ConsentInvalid) as caught:
        parse_mii_consent(resource)
    return caught.value.problems


def test_a_broad_consent_becomes_plain_data() -> None:
    assert parse_mii_consent(consent_resource()) == MiiConsent(
        patient_reference="Patient/p-1",
        patient_identifiers=(),
        date_time=datetime(2024, 2, 23, 11, tzinfo=UTC),
        status="active",
        provisions=(
            PolicyProvision(MDAT_COLLECT, permit=True, start=date(2024, 2, 23), end=date(2054, 1, 31)),
            PolicyProvision(MDAT_RESEARCH, permit=True, start=date(2024, 2, 23), end=date(2054, 1, 31)),
        ),
    )


def test_every_consent_in_the_mii_test_data_parses() -> None:
    """The MII core-data-set bundles' consents (broad consent incl. biomaterial policies) are valid."""
    consents = [
        entry["resource"]
        for bundle in sorted(MII_KDS_DIR.glob("*.json"))
        for entry in json.loads(bundle.read_text(encoding="utf-8")).get("entry", [])
        if entry["resource"]["resourceType"] == "Consent"
    ]
    assert len(consents) == 10, f"expected the 10 consents of the MII test data in {MII_KDS_DIR}"
    parsed = [parse_mii_consent(resource) for resource in consents]
    assert all(consent.provisions for consent in parsed)
    assert f"{OID}.22" in {p.code for consent in parsed for p in consent.provisions}


def test_every_problem_is_reported_at_once() -> None:
    resource = consent_resource(policy("1.2.3"), policy(MDAT_COLLECT, start="2024-02-31"))
    resource["resourceType"] = "Observation"
    del resource["dateTime"]
    assert problems_of(resource) == [
        "Consent.resourceType: expected 'Consent', got 'Observation'",
        "Consent.dateTime: missing",
        f"Consent.provision.provision[0].code[0].coding[0].code: unknown policy code '1.2.3'; known: {KNOWN}",
        "Consent.provision.provision[1].period.start: not a FHIR date or dateTime: '2024-02-31'",
    ]


def test_the_exception_message_carries_the_problems() -> None:
    with pytest.raises(ConsentInvalid, match=r"^not a valid MII consent: Consent\.status: missing$"):
        parse_mii_consent({k: v for k, v in consent_resource().items() if k != "status"})


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ([], "Consent: expected an object, got an array"),
        ("Consent", "Consent: expected an object, got a string"),
        (None, "Consent: missing"),
    ],
)
def test_a_resource_that_is_no_json_object_is_rejected(value: Any, problem: str) -> None:
    assert problems_of(value) == [problem]


def test_a_missing_profile_is_rejected() -> None:
    resource = consent_resource()
    del resource["meta"]
    assert problems_of(resource) == [f"Consent.meta.profile: must contain {MII_CONSENT_PROFILE}"]


def test_a_foreign_profile_is_rejected() -> None:
    resource = consent_resource()
    resource["meta"]["profile"] = ["http://fhir.de/ConsentManagement/StructureDefinition/Consent"]
    assert problems_of(resource) == [f"Consent.meta.profile: must contain {MII_CONSENT_PROFILE}"]


def test_a_versioned_profile_is_accepted() -> None:
    resource = consent_resource()
    resource["meta"]["profile"] = [f"{MII_CONSENT_PROFILE}|2025.0.0"]
    assert parse_mii_consent(resource).status == "active"


def test_a_scope_other_than_research_is_rejected() -> None:
    resource = consent_resource()
    resource["scope"]["coding"][0]["code"] = "patient-privacy"
    assert problems_of(resource) == [
        "Consent.scope: expected the coding http://terminology.hl7.org/CodeSystem/consentscope#research"
    ]


def test_categories_need_the_loinc_and_the_mii_code() -> None:
    resource = consent_resource()
    resource["category"] = [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}]
    assert problems_of(resource) == [
        "Consent.category: missing the coding http://loinc.org#57016-8",
        "Consent.category: missing the MII consent category 2.16.840.1.113883.3.1937.777.24.2.184",
    ]


def test_the_mii_category_under_its_older_code_system_url_is_accepted() -> None:
    resource = consent_resource()
    resource["category"][1]["coding"][0]["system"] = (
        "https://www.medizininformatik-initiative.de/fhir/modul-consent/CodeSystem/mii-cs-consent-consent_category"
    )
    assert parse_mii_consent(resource).status == "active"


def test_a_consent_without_a_policy_uri_is_rejected() -> None:
    resource = consent_resource()
    resource["policy"] = [{"authority": "https://example.org"}]
    assert problems_of(resource) == [
        "Consent.policy: expected at least one policy with a uri, e.g. urn:oid:2.16.840.1.113883.3.1937.777.24.2.1791"
    ]


def test_an_unknown_status_lists_the_consent_states() -> None:
    resource = consent_resource()
    resource["status"] = "signed"
    assert problems_of(resource) == [
        (
            "Consent.status: unknown consent state 'signed'; known: draft, proposed, active, rejected, inactive, "
            "entered-in-error"
        )
    ]


def test_a_missing_patient_is_rejected() -> None:
    resource = consent_resource()
    del resource["patient"]
    assert problems_of(resource) == ["Consent.patient: missing"]


def test_a_patient_without_reference_or_identifier_is_rejected() -> None:
    resource = consent_resource()
    resource["patient"] = {"display": "Erika Mustermann"}
    assert problems_of(resource) == ["Consent.patient: needs a reference or an identifier"]


def test_a_patient_given_by_identifier_is_kept() -> None:
    resource = consent_resource()
    resource["patient"] = {"identifier": {"system": "https://ths-greifswald.de/gpas", "value": "dic_1H51T"}}
    parsed = parse_mii_consent(resource)
    assert (parsed.patient_reference, parsed.patient_identifiers) == (
        None,
        (("https://ths-greifswald.de/gpas", "dic_1H51T"),),
    )


def test_a_patient_identifier_needs_a_string_value() -> None:
    resource = consent_resource()
    resource["patient"] = {"identifier": {"system": "https://ths-greifswald.de/gpas", "value": 42}}
    assert problems_of(resource) == ["Consent.patient.identifier.value: expected a string, got a number"]


def test_a_missing_date_time_is_rejected() -> None:
    resource = consent_resource()
    resource["dateTime"] = None
    assert problems_of(resource) == ["Consent.dateTime: missing"]


@pytest.mark.parametrize(
    "text", ["yesterday", "2024-02-23T12:00:00", "2024-02-23T12:00+01:00", "2024-02-30", "20240223"]
)
def test_an_unparseable_date_time_is_rejected(text: str) -> None:
    resource = consent_resource()
    resource["dateTime"] = text
    assert problems_of(resource) == [f"Consent.dateTime: not a FHIR date or dateTime: {text!r}"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-02", datetime(2024, 2, 1, tzinfo=UTC)),
        ("2024-02-23", datetime(2024, 2, 23, tzinfo=UTC)),
        ("2024-02-23T12:00:00Z", datetime(2024, 2, 23, 12, tzinfo=UTC)),
        ("2024-02-23T12:00:00.250+05:30", datetime(2024, 2, 23, 12, 0, 0, 250000, timezone(timedelta(hours=5.5)))),
    ],
)
def test_date_times_keep_their_zone_and_bare_dates_are_taken_as_utc(text: str, expected: datetime) -> None:
    resource = consent_resource()
    resource["dateTime"] = text
    parsed = parse_mii_consent(resource).date_time
    assert (parsed, parsed.utcoffset()) == (expected, expected.utcoffset())


def test_a_top_level_permit_is_rejected() -> None:
    resource = consent_resource()
    resource["provision"]["type"] = "permit"
    assert problems_of(resource) == [
        "Consent.provision.type: expected 'deny' (all not permitted is denied), got 'permit'"
    ]


def test_a_top_level_provision_needs_a_period() -> None:
    resource = consent_resource()
    del resource["provision"]["period"]
    assert problems_of(resource) == ["Consent.provision.period: missing"]


def test_a_consent_without_nested_provisions_permits_nothing() -> None:
    resource = consent_resource()
    del resource["provision"]["provision"]
    assert parse_mii_consent(resource).provisions == ()


def test_a_nested_provision_needs_a_period_start() -> None:
    resource = consent_resource(policy(MDAT_COLLECT))
    del resource["provision"]["provision"][0]["period"]["start"]
    assert problems_of(resource) == ["Consent.provision.provision[0].period.start: missing"]


def test_a_period_ending_before_it_starts_is_rejected() -> None:
    resource = consent_resource(policy(MDAT_COLLECT, start="2024-02-23", end="2024-01-31"))
    assert problems_of(resource) == ["Consent.provision.provision[0].period.end: 2024-01-31 is before start 2024-02-23"]


def test_a_nested_provision_of_an_unknown_type_is_rejected() -> None:
    resource = consent_resource(policy(MDAT_COLLECT, kind="maybe"))
    assert problems_of(resource) == ["Consent.provision.provision[0].type: expected 'permit' or 'deny', got 'maybe'"]


def test_a_coding_from_another_system_is_rejected() -> None:
    resource = consent_resource(policy(MDAT_COLLECT))
    resource["provision"]["provision"][0]["code"][0]["coding"][0]["system"] = "https://ths-greifswald.de/fhir/gics"
    assert problems_of(resource) == [
        (
            "Consent.provision.provision[0].code: "
            "expected codings naming exactly one policy (from urn:oid:2.16.840.1.113883.3.1937.777.24.5.3), found 0"
        )
    ]


def test_two_codings_of_different_policies_in_one_provision_are_rejected() -> None:
    resource = consent_resource(policy(MDAT_COLLECT))
    resource["provision"]["provision"][0]["code"][0]["coding"].append({"system": POLICY_SYSTEM, "code": IDAT_COLLECT})
    assert problems_of(resource) == [
        (
            "Consent.provision.provision[0].code: "
            "expected codings naming exactly one policy (from urn:oid:2.16.840.1.113883.3.1937.777.24.5.3), found 2"
        )
    ]


def test_codeable_concepts_naming_one_policy_twice_are_one_policy_as_gics_writes_them() -> None:
    resource = consent_resource(policy(MDAT_COLLECT))
    resource["provision"]["provision"][0]["code"] *= 2
    assert [p.code for p in parse_mii_consent(resource).provisions] == [MDAT_COLLECT]


def test_an_unknown_policy_code_lists_the_known_ones() -> None:
    resource = consent_resource(policy(MDAT_COLLECT), policy(MDAT_RESEARCH), policy(f"{OID}.99"))
    assert problems_of(resource) == [
        (
            "Consent.provision.provision[2].code[0].coding[0].code: unknown policy code "
            f"'2.16.840.1.113883.3.1937.777.24.5.3.99'; known: {KNOWN}"
        )
    ]


def test_the_same_policy_twice_in_overlapping_periods_is_rejected() -> None:
    resource = consent_resource(
        policy(MDAT_COLLECT, start="2024-01-01", end="2024-06-30"),
        policy(MDAT_RESEARCH),
        policy(MDAT_COLLECT, start="2024-06-30", end=None, kind="deny"),
    )
    assert problems_of(resource) == [
        f"Consent.provision.provision[2]: policy '{MDAT_COLLECT}' is already in provision[0] for an overlapping period"
    ]


def test_the_same_policy_in_consecutive_periods_is_accepted() -> None:
    resource = consent_resource(
        policy(MDAT_COLLECT, start="2024-01-01", end="2024-06-29"),
        policy(MDAT_COLLECT, start="2024-06-30", end=None, kind="deny"),
    )
    assert [p.permit for p in parse_mii_consent(resource).provisions] == [True, False]


@pytest.mark.parametrize("text", ["2024-13", "24-01-01", "2024-02-30", "2024-02-23T25:00:00Z", "2024-1-5", "0000"])
def test_a_malformed_period_date_is_rejected(text: str) -> None:
    resource = consent_resource(policy(MDAT_COLLECT, start=text))
    assert problems_of(resource) == [
        f"Consent.provision.provision[0].period.start: not a FHIR date or dateTime: {text!r}"
    ]


def test_a_period_date_of_the_wrong_json_type_is_rejected() -> None:
    resource = consent_resource(policy(MDAT_COLLECT))
    resource["provision"]["provision"][0]["period"]["end"] = 20540131
    assert problems_of(resource) == ["Consent.provision.provision[0].period.end: expected a string, got a number"]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2024", "2025", (date(2024, 1, 1), date(2025, 12, 31))),
        ("2024-02", "2024-02", (date(2024, 2, 1), date(2024, 2, 29))),
        ("2022-01-31T23:00:00+01:00", "3000-01-01T00:00:00+01:00", (date(2022, 1, 31), date(3000, 1, 1))),
        ("2024-02-23", None, (date(2024, 2, 23), None)),
    ],
)
def test_periods_become_inclusive_days(start: str, end: str | None, expected: tuple[date, date | None]) -> None:
    [provision] = parse_mii_consent(consent_resource(policy(MDAT_COLLECT, start=start, end=end))).provisions
    assert (provision.start, provision.end) == expected


def test_a_withdrawal_is_a_valid_consent_denying_from_the_given_day_on() -> None:
    now = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
    resource: dict[str, Any] = withdrawal_consent(
        {"reference": "Patient/p-1"}, date(2025, 3, 1), [MDAT_RESEARCH, IDAT_COLLECT], now
    )
    assert parse_mii_consent(resource) == MiiConsent(
        patient_reference="Patient/p-1",
        patient_identifiers=(),
        date_time=now,
        status="active",
        provisions=(
            PolicyProvision(MDAT_RESEARCH, permit=False, start=date(2025, 3, 1), end=None),
            PolicyProvision(IDAT_COLLECT, permit=False, start=date(2025, 3, 1), end=None),
        ),
    )
    assert resource["provision"]["provision"][0]["code"][0]["coding"][0]["display"] == "MDAT wissenschaftlich nutzen"


def test_a_withdrawal_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one policy code"):
        withdrawal_consent({"reference": "Patient/p-1"}, date(2025, 3, 1), [], datetime(2025, 3, 1, tzinfo=UTC))


def test_a_withdrawal_of_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ConsentInvalid, match=r"unknown policy code '1\.2\.3'"):
        withdrawal_consent({"reference": "Patient/p-1"}, date(2025, 3, 1), ["1.2.3"], datetime(2025, 3, 1, tzinfo=UTC))


def test_a_withdrawal_needs_an_aware_time() -> None:
    with pytest.raises(ConsentInvalid) as caught:
        withdrawal_consent({"reference": "Patient/p-1"}, date(2025, 3, 1), [MDAT_RESEARCH], datetime(2025, 3, 1, 9, 30))  # noqa: DTZ001
    assert caught.value.problems == ["Consent.dateTime: not a FHIR date or dateTime: '2025-03-01T09:30:00'"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    return [path for key, child in children for path in [(*prefix, key), *_paths(child, (*prefix, key))]]


VALID = consent_resource(policy(MDAT_COLLECT), policy(MDAT_RESEARCH, end=None, kind="deny"))


@given(path=st.sampled_from(_paths(VALID)), replacement=JSON)
def test_any_damaged_node_gives_problems_never_a_crash(path: tuple[Any, ...], replacement: Any) -> None:
    resource = copy.deepcopy(VALID)
    parent = resource
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = replacement
    try:
        parse_mii_consent(resource)
    except ConsentInvalid as invalid:
        problems = invalid.problems
    else:
        return
    assert problems
    assert all(problem.startswith("Consent") for problem in problems)


@given(JSON)
def test_arbitrary_json_is_never_a_consent(value: Any) -> None:
    assert problems_of(value)


PROVISIONS = st.dictionaries(
    st.sampled_from(sorted(MII_POLICY_CODES)),
    st.tuples(st.booleans(), st.dates(date(2000, 1, 1), date(2099, 1, 1)), st.none() | st.integers(0, 20000)),
    min_size=1,
)


@given(PROVISIONS)
def test_provisions_survive_the_round_trip(provisions: dict[str, tuple[bool, date, int | None]]) -> None:
    expected = tuple(
        PolicyProvision(code, permit, start, None if days is None else start + timedelta(days=days))
        for code, (permit, start, days) in provisions.items()
    )
    resource = consent_resource(
        *(
            policy(
                p.code,
                p.start.isoformat(),
                None if p.end is None else p.end.isoformat(),
                "permit" if p.permit else "deny",
            )
            for p in expected
        )
    )
    assert parse_mii_consent(resource).provisions == expected
