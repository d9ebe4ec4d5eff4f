"""Pairs beyond one pseudonym per original: secondary pseudonyms, inserted pairs, anonymised and deleted originals.

Semantics as the gPAS IG describes them, per-item answers for mixed batches (the good items stored, the
others not), and the refusals that store nothing: missing or mistyped parameters, oversized batches,
the trust centre's own domains, callers acting for a node.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from starlette.testclient import TestClient

from tests.conftest import examples
from tests.unit.trustcentre.conftest import DOMAINS, SECRET, headers
from tests.unit.trustcentre.conftest import settings as tc_settings
from tests.unit.trustcentre.test_gpas_api import call, errors, outcome, pairs, request, results
from trustcentre import secondary
from trustcentre.app import create_app
from trustcentre.db import connect, pseudonyms, secondary_pseudonyms
from trustcentre.pseudonym_scheme import candidate, looks_like_pseudonym, settings_from_mapping

#: `study` as configured, plus a domain that allows several pseudonyms per original.
RECORDS = "records"
ISSUE_TYPE = "http://hl7.org/fhir/issue-type"


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    configured = dataclasses.replace(
        tc_settings(database_url), domains={**DOMAINS, RECORDS: {"prefix": "R", "multiple_pseudonyms": True}}
    )
    with TestClient(create_app(configured), raise_server_exceptions=False) as test_client:
        yield test_client


def item(name: str, target: str, original: str, third: str, value: Any) -> dict[str, Any]:
    """One per-item parameter (`pseudonym` of an insert, `original` of a secondary request)."""
    key = "value" if name == "pseudonym" else "count"
    third_part = {"name": key, third: value}
    first = {"name": "original" if name == "pseudonym" else "value", "valueString": original}
    return {"name": name, "part": [{"name": "target", "valueString": target}, first, third_part]}


def insert_request(*triples: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [item("pseudonym", *t[:2], "valueString", t[2]) for t in triples],
    }


def secondary_request(*triples: tuple[str, str, int]) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [item("original", *t[:2], "valueInteger", t[2]) for t in triples],
    }


def inserted(response: Any) -> list[tuple[str, str]]:
    """(original, result code) per item of an insert answer, checking each part's shape."""
    assert response.status_code == 200, response.text
    out = []
    for parameter in response.json()["parameter"]:
        assert parameter["name"] == "successStatus"
        parts = {p["name"]: p for p in parameter["part"]}
        assert list(parts) == ["target", "original", "value", "result-code"]
        out.append((parts["original"]["valueIdentifier"]["value"], parts["result-code"]["valueCoding"]["code"]))
    return out


def secondaries(response: Any) -> list[tuple[str, str] | str]:
    """(original, secondary pseudonym) per `secondarypseudonym`, or the issue type of an `error`, in order."""
    assert response.status_code == 200, response.text
    out: list[tuple[str, str] | str] = []
    for parameter in response.json()["parameter"]:
        parts = {p["name"]: p for p in parameter["part"]}
        if parameter["name"] == "error":
            assert list(parts) == ["target", "error-code"]
            assert parts["error-code"]["valueCoding"]["system"] == ISSUE_TYPE
            out.append(parts["error-code"]["valueCoding"]["code"])
            continue
        assert parameter["name"] == "secondarypseudonym"
        assert list(parts) == ["target", "original", "value", "result-code"]
        assert parts["result-code"]["valueCoding"]["code"] == "MSG_CREATED"
        out.append((parts["original"]["valueIdentifier"]["value"], parts["value"]["valueIdentifier"]["value"]))
    return out


def stored(database_url: str) -> tuple[int, int]:
    """(primary, secondary) pairs in the database."""
    with connect(database_url).connect() as connection:
        count = [
            int(connection.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (pseudonyms, secondary_pseudonyms)
        ]
    return count[0], count[1]


STUDY = settings_from_mapping(DOMAINS["study"])
#: Valid pseudonyms of `study` (prefix S, 10 characters and a check character) not made by the trust centre.
MIGRATED = [candidate(b"another gPAS, another secret!!!!", "study", f"old-{i}", STUDY, 0) for i in range(4)]


def test_an_inserted_pair_is_what_pseudonymisation_and_de_pseudonymisation_answer(client: TestClient) -> None:
    answer = call(client, "$insertValuePseudonymPairs", insert_request(("study", "legacy-1", MIGRATED[0])))
    assert inserted(answer) == [("legacy-1", "MSG_CREATED")]
    assert pairs(call(client, "$pseudonymize", request("study", "legacy-1"))) == {"legacy-1": MIGRATED[0]}
    assert pairs(call(client, "$pseudonymizeAllowCreate", request("study", "legacy-1"))) == {"legacy-1": MIGRATED[0]}
    revealed = call(client, "$dePseudonymize", request("study", MIGRATED[0], name="pseudonym"))
    assert pairs(revealed) == {"legacy-1": MIGRATED[0]}


def test_a_mixed_insert_batch_is_answered_per_item_and_only_the_good_pairs_are_stored(
    client: TestClient, database_url: str
) -> None:
    made = pairs(call(client, "$pseudonymizeAllowCreate", request("study", "made-here")))["made-here"]
    answer = call(
        client,
        "$insertValuePseudonymPairs",
        insert_request(
            ("study", "new-1", MIGRATED[1]),
            ("study", "made-here", MIGRATED[2]),  # the original has a pseudonym already
            ("study", "new-2", made),  # the pseudonym is another original's
            ("study", "new-3", "S-not-a-pseudonym"),  # not of the domain's form
            ("study", "new-1", MIGRATED[1]),  # repeats the first: already there
            ("nowhere", "new-4", MIGRATED[3]),  # unknown domain
            ("clinic", "new-5", MIGRATED[3]),  # of study's form, not clinic's
        ),
    )
    assert answer.status_code == 200, answer.text
    codes = [p["part"][-1]["valueCoding"]["code"] for p in answer.json()["parameter"]]
    assert codes == ["MSG_CREATED", "business-rule", "business-rule", "value", "duplicate", "not-found", "value"]
    assert answer.json()["parameter"][5]["part"] == [
        {"name": "target", "valueIdentifier": {"system": "https://ths-greifswald.de/gpas", "value": "nowhere"}},
        {"name": "result-code", "valueCoding": {"system": ISSUE_TYPE, "code": "not-found", "display": "Not Found"}},
    ]
    assert stored(database_url) == (2, 0)
    assert pairs(call(client, "$pseudonymize", request("study", "made-here"))) == {"made-here": made}


@settings(max_examples=examples(25), deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from([*MIGRATED[:3], "S123"])), min_size=1, max_size=8
    )
)
def test_inserted_pairs_keep_one_pseudonym_per_original_and_one_original_per_pseudonym(
    tmp_path_factory: pytest.TempPathFactory, batch: list[tuple[str, str]]
) -> None:
    url = f"sqlite:///{tmp_path_factory.mktemp('tc') / 'tc.db'}"
    with TestClient(create_app(tc_settings(url))) as client:
        answer = inserted(
            call(client, "$insertValuePseudonymPairs", insert_request(*(("study", o, p) for o, p in batch)))
        )
        model: dict[str, str] = {}
        for (original, pseudonym), (_, code) in zip(batch, answer, strict=True):
            if not looks_like_pseudonym(pseudonym, STUDY):
                assert code == "value"
            elif model.get(original) == pseudonym:
                assert code == "duplicate"
            elif original in model or pseudonym in model.values():
                assert code == "business-rule"
            else:
                assert code == "MSG_CREATED"
                model[original] = pseudonym
        assert pairs(call(client, "$pseudonymize", request("study", "a", "b", "c"))) == model


def test_an_anonymised_original_is_gone_but_its_pseudonym_still_resolves_to_the_marker(
    client: TestClient, database_url: str
) -> None:
    made = pairs(call(client, "$pseudonymizeAllowCreate", request("study", "forget-me", "keep-me")))
    answer = call(client, "$anonymizeOriginals", request("study", "forget-me", "never-there"))
    assert results(answer) == [("forget-me", "MSG_UPDATED"), ("never-there", "not-found")]
    assert errors(call(client, "$pseudonymize", request("study", "forget-me"))) == [("forget-me", "not-found")]
    revealed = call(client, "$dePseudonymize", request("study", made["forget-me"], made["keep-me"], name="pseudonym"))
    assert pairs(revealed) == {"#anonymised#" + made["forget-me"]: made["forget-me"], "keep-me": made["keep-me"]}
    again = pairs(call(client, "$pseudonymizeAllowCreate", request("study", "forget-me")))
    assert again["forget-me"] != made["forget-me"], "the same original starts afresh, unlinked to the old pseudonym"
    assert results(call(client, "$anonymizeOriginals", request("study", "forget-me"))) == [("forget-me", "MSG_UPDATED")]
    assert stored(database_url) == (3, 0)
    trail = client.get("/ttp-fhir/fhir/AuditEvent", params={"date": "ge2000-01-01"}, headers=headers("admin")).json()
    [first, second] = [
        e["resource"] for e in trail["entry"] if e["resource"]["subtype"][0]["code"] == "$anonymizeOriginals"
    ]
    for event in (first, second):
        assert "forget-me" not in json.dumps(event), "the audit trail does not write an anonymised original again"
    assert {e["what"]["identifier"]["value"] for e in first["entity"] + second["entity"]} >= {made["forget-me"]}


def test_no_caller_can_send_an_original_that_looks_anonymised(client: TestClient, database_url: str) -> None:
    response = call(client, "$pseudonymizeAllowCreate", request("study", "fine", "#anonymised#S123"))
    assert "Parameters.parameter[2]" in outcome(response, 400)
    assert stored(database_url) == (0, 0)


def test_secondary_pseudonyms_are_new_each_time_unique_and_resolve_to_their_original(client: TestClient) -> None:
    primary = pairs(call(client, "$pseudonymizeAllowCreate", request(RECORDS, "person-1")))["person-1"]
    first = secondaries(call(client, "$pseudonymize-secondary", secondary_request((RECORDS, "person-1", 3))))
    second = secondaries(call(client, "$pseudonymizeSecondary", secondary_request((RECORDS, "person-1", 2))))
    values = [value for _, value in first + second]  # type: ignore[misc]  # no errors here: checked below
    assert [original for original, _ in first + second] == ["person-1"] * 5  # type: ignore[misc]
    assert len(set(values)) == 5
    assert primary not in values
    domain = settings_from_mapping({"prefix": "R"})
    assert all(looks_like_pseudonym(v, domain) for v in values)
    revealed = call(client, "$dePseudonymize", request(RECORDS, *values, name="pseudonym"))
    assert [p["part"][1]["valueIdentifier"]["value"] for p in revealed.json()["parameter"]] == ["person-1"] * 5
    assert pairs(call(client, "$pseudonymize", request(RECORDS, "person-1"))) == {"person-1": primary}


def test_a_mixed_secondary_batch_stores_the_good_items_and_answers_an_error_for_each_other(
    client: TestClient, database_url: str
) -> None:
    answer = secondaries(
        call(
            client,
            "$pseudonymize-secondary",
            secondary_request((RECORDS, "x", 1), ("nowhere", "y", 2), ("study", "z", 1), (RECORDS, "w", 2)),
        )
    )
    assert [a if isinstance(a, str) else a[0] for a in answer] == ["x", "not-found", "not-supported", "w", "w"]
    assert stored(database_url) == (0, 3)


def test_deleting_or_anonymising_an_original_takes_its_secondary_pseudonyms_along(
    client: TestClient, database_url: str
) -> None:
    made = secondaries(call(client, "$pseudonymize-secondary", secondary_request((RECORDS, "a", 2), (RECORDS, "b", 1))))
    assert results(call(client, "$deletePseudonyms", request(RECORDS, "a"))) == [("a", "MSG_DELETED")]
    assert stored(database_url) == (0, 1)
    assert results(call(client, "$anonymizeOriginals", request(RECORDS, "b"))) == [("b", "MSG_UPDATED")]
    [(_, of_b)] = [m for m in made if m[0] == "b"]  # type: ignore[index]
    revealed = call(client, "$dePseudonymize", request(RECORDS, of_b, name="pseudonym"))
    assert pairs(revealed) == {"#anonymised#" + of_b: of_b}


def test_a_node_makes_secondary_pseudonyms_of_the_persons_it_was_given_in_its_domains(client: TestClient) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "identifier",
                "valueIdentifier": {"system": "http://fhir.de/sid/gkv/kvid-10", "value": "A123456780"},
            }
        ],
    }
    answer = client.post("/ttp-fhir/fhir/epix/$requestMPI", content=json.dumps(body), headers=headers("dic-connector"))
    [person] = [p["valueIdentifier"]["value"] for p in answer.json()["parameter"] if p["name"] == "person"]
    refused = call(client, "$pseudonymize-secondary", secondary_request((RECORDS, person, 1)), who="dic-connector")
    assert outcome(refused, 403) == "caller 'dic-connector' may not use domain 'records'; its domains: study"
    made = secondaries(
        call(client, "$pseudonymize-secondary", secondary_request(("study", person, 1)), who="dic-connector")
    )
    assert made == ["not-supported"], "study keeps one pseudonym per person"


@pytest.mark.parametrize("operation", ["$insertValuePseudonymPairs", "$anonymizeOriginals", "$deletePseudonyms"])
def test_only_the_site_administrator_changes_pairs_wholesale(client: TestClient, operation: str) -> None:
    body = (
        insert_request(("study", "a", MIGRATED[0]))
        if operation == "$insertValuePseudonymPairs"
        else request("study", "a")
    )
    assert outcome(call(client, operation, body, who="dic-connector"), 403).startswith(
        "caller 'dic-connector' lacks the role 'manage-domains'"
    )
    assert outcome(call(client, operation, body, who="node-admin"), 403) == (
        "caller 'node-admin' acts for a node; only the site administrator may"
    )


def part(name: str, **value: Any) -> dict[str, Any]:
    return {"name": name, **value}


def parameters(*parameter: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(parameter)}


TARGET = part("target", valueString=RECORDS)
VALUE = part("value", valueString="v")


@pytest.mark.parametrize(
    ("operation", "body", "refusal"),
    [
        ("$pseudonymize-secondary", parameters(), (400, "parameter 'original' is required")),
        (
            "$pseudonymize-secondary",
            parameters(part("original", valueString="v")),
            (400, "Parameters.parameter[0] (original) must carry a part list"),
        ),
        (
            "$pseudonymize-secondary",
            parameters(part("original", part=[VALUE, part("count", valueInteger=1)])),
            (400, "parameter 'target' is required"),
        ),
        (
            "$pseudonymize-secondary",
            parameters(part("original", part=[TARGET, part("count", valueInteger=1)])),
            (400, "parameter 'value' is required"),
        ),
        (
            "$pseudonymize-secondary",
            parameters(part("original", part=[TARGET, VALUE])),
            (400, "parameter 'count' is required"),
        ),
        *(
            (
                "$pseudonymize-secondary",
                parameters(part("original", part=[TARGET, VALUE, part("count", **count)])),
                (400, "Parameters.parameter[0].part[2] (count) must carry an integer of at least 1"),
            )
            for count in ({"valueInteger": 0}, {"valueString": "two"}, {"valueBoolean": True}, {"valueDecimal": 1.5})
        ),
        (
            "$pseudonymize-secondary",
            parameters(part("original", part=[part("target", valueInteger=7), VALUE, part("count", valueInteger=1)])),
            (400, "Parameters.parameter[0].part[0] (target) must carry a non-empty valueString"),
        ),
        (
            "$pseudonymize-secondary",
            secondary_request((RECORDS, "a", 600), (RECORDS, "b", 401)),
            (413, "1001 secondary pseudonyms in one request; at most 1000 are allowed"),
        ),
        (
            "$pseudonymize-secondary",
            secondary_request(*((RECORDS, str(i), 1) for i in range(1001))),
            (413, "1001 original items in one request; at most 1000 are allowed"),
        ),
        (
            "$pseudonymize-secondary",
            secondary_request(("persons.dic", "a", 1)),
            (400, "domains starting 'persons.' are the trust centre's own"),
        ),
        ("$insertValuePseudonymPairs", parameters(), (400, "parameter 'pseudonym' is required")),
        (
            "$insertValuePseudonymPairs",
            parameters(
                part("pseudonym", part=[part("target", valueString="study"), part("original", valueString="o")])
            ),
            (400, "parameter 'value' is required"),
        ),
        (
            "$insertValuePseudonymPairs",
            insert_request(("study", "#anonymised#x", MIGRATED[0])),
            (400, "Parameters.parameter[0].part: originals starting '#anonymised#' mark anonymised ones"),
        ),
        (
            "$insertValuePseudonymPairs",
            insert_request(*(("study", str(i), MIGRATED[0]) for i in range(1001))),
            (413, "1001 pseudonym items in one request; at most 1000 are allowed"),
        ),
        ("$anonymizeOriginals", request("study"), (400, "parameter 'original' is required")),
        (
            "$anonymizeOriginals",
            request("nowhere", "a"),
            (400, "unknown domain 'nowhere'; known domains: clinic, records, study"),
        ),
        (
            "$anonymizeOriginals",
            request("persons.dic", "a"),
            (400, "domains starting 'persons.' are the trust centre's own"),
        ),
        (
            "$anonymizeOriginals",
            request("study", *(str(i) for i in range(1001))),
            (413, "1001 original values in one request; at most 1000 are allowed"),
        ),
        ("$deletePseudonyms", parameters(part("original", valueString="a")), (400, "parameter 'target' is required")),
    ],
)
def test_bad_requests_are_refused_whole_and_store_nothing(
    client: TestClient, database_url: str, operation: str, body: dict[str, Any], refusal: tuple[int, str]
) -> None:
    pairs(call(client, "$pseudonymizeAllowCreate", request("study", "a")))
    status, message = refusal
    assert outcome(call(client, operation, body), status) == message
    assert stored(database_url) == (1, 0)
    assert pairs(call(client, "$pseudonymize", request("study", "a")))


def test_a_primary_pseudonym_never_takes_a_value_a_secondary_one_holds(client: TestClient, database_url: str) -> None:
    records = settings_from_mapping({"prefix": "R", "multiple_pseudonyms": True})
    first_choice = candidate(SECRET, RECORDS, "late-comer", records, 0)
    with connect(database_url).begin() as connection:
        connection.execute(
            secondary_pseudonyms.insert().values(domain=RECORDS, original="early", pseudonym=first_choice)
        )
    made = pairs(call(client, "$pseudonymizeAllowCreate", request(RECORDS, "late-comer")))["late-comer"]
    assert made == candidate(SECRET, RECORDS, "late-comer", records, 1)
    revealed = call(client, "$dePseudonymize", request(RECORDS, first_choice, made, name="pseudonym"))
    assert pairs(revealed) == {"early": first_choice, "late-comer": made}


def test_a_drawn_secondary_pseudonym_that_is_taken_is_drawn_again(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = pairs(call(client, "$pseudonymizeAllowCreate", request(RECORDS, "someone")))["someone"]
    records = settings_from_mapping({"prefix": "R", "multiple_pseudonyms": True})
    fresh = candidate(SECRET, RECORDS, "not used", records, 0)
    draws = iter([taken, fresh])
    monkeypatch.setattr(secondary, "random_pseudonym", lambda _settings: next(draws))
    assert secondaries(call(client, "$pseudonymize-secondary", secondary_request((RECORDS, "other", 1)))) == [
        ("other", fresh)
    ]
