"""Random journeys across the real federation: hypothesis ingests, consents, withdraws and starts processes in
any order, and after every step the federation must keep DESIGN.md's invariants.

Hand-written scenarios cover the orders someone thought of; this finds the others (withdraw, then send;
send twice; send on from the site that received). A model says what each process must do: which patient
has which consent at the trust centre and which sites hold whose record. The people are drawn from seeds
no other test uses and the model lives as long as the session's federation, so a person met again in a
later example (or while shrinking) is still known.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from conformance.invariants import identifying_leaks, names_exchange, pseudonyms_of
from connector.tasks import Process, parameter
from fixtures.consents import POLICY_OID, POLICY_SYSTEM
from fixtures.strategies import CARE_SITES, POLICIES, RESEARCH_POLICY, TREATMENT_POLICY, patient_profiles
from fixtures.synthetic import PatientProfile, PatientRecord, patient_record
from tests.e2e.conftest import KVNR_SYSTEM, Federation, patient_input, stored_from_now, target_input, task_output

PROJECT, DOMAIN = "demo-study", "research-demo"
ICD10GM = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"
RESEARCH_TYPES = ("Patient", "Encounter", "Condition", "Procedure", "Observation", "MedicationStatement")
#: Other tests draw seeds up to 2**31; shifted above it, only this test ever changes these people.
SEEDS = 2**40
#: The consent each process needs (docs/federation.md, "Processes and consent").
NEEDED = {Process.CARE_SUMMARY: TREATMENT_POLICY, Process.DATA_SEND: RESEARCH_POLICY}
AUDIT_OUTCOME = {"completed": "0", "failed": "8"}
PROFILES = patient_profiles(consent=False).map(lambda profile: replace(profile, seed=SEEDS + profile.seed))
#: No shrinking: it would replay journeys against a federation the first run already changed, for minutes.
JOURNEYS = settings(
    max_examples=5,
    stateful_step_count=10,
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Known:
    """What the model knows of one person: their record, the consent given and withdrawn, where they are held.

    `Federation.grant` dates its consent in the past, so it never undoes a withdrawal made since.
    """

    record: PatientRecord
    granted: set[str] = field(default_factory=set)
    withdrawn: set[str] = field(default_factory=set)
    sites: set[str] = field(default_factory=set)
    mpi: str | None = None

    @property
    def kvnr(self) -> str:
        return self.record.person.kvnr

    def identifier(self) -> dict[str, str]:
        """How processes and the trust centre name the person: the KVNR, the same at every site."""
        return {"system": KVNR_SYSTEM, "value": self.kvnr}

    def consents(self, policy: str) -> bool:
        return policy in self.granted - self.withdrawn


@dataclass
class Session:
    """The model of the session's federation, shared by every example the state machine runs."""

    people: dict[str, Known] = field(default_factory=dict)
    #: MPI id -> the person's pseudonym in DOMAIN, as first seen on the research node.
    pseudonyms: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Exchange:
    """A process this machine started, with the audit ids each site held before it, to check both ends."""

    process: Process
    sender: str
    task: Mapping[str, Any]
    before: Mapping[str, frozenset[str]]


class Journeys(RuleBasedStateMachine):
    """Ingest, grant, withdraw, careSummary, dataSend and feasibility in the orders hypothesis picks."""

    patients = Bundle("patients")

    def __init__(self, federation: Federation, session: Session) -> None:
        super().__init__()
        self.federation = federation
        self.session = session
        self.exchanges: list[Exchange] = []
        self.since = stored_from_now()

    # --- rules ---------------------------------------------------------------------------------------

    @initialize(target=patients, profile=PROFILES)
    def broadly_consenting_patient(self, profile: PatientProfile) -> str:
        """Most hospital patients sign the broad consent: a journey starts with one, so exchanges can go through."""
        patient = self.ingest(profile)
        self.grant(patient, list(POLICIES))
        return patient

    @rule(target=patients, profile=PROFILES)
    def ingest(self, profile: PatientProfile) -> str:
        """A site records a patient of its own (their local number is that site's)."""
        record = patient_record(profile)
        known = self.session.people.setdefault(record.person.kvnr, Known(record))
        answer = self.federation.ingest(profile.site, known.record.bundle())
        assert answer.status_code == 200, answer.text
        known.sites.add(profile.site)
        assert len(self.federation.search(profile.site, f"Patient?identifier={KVNR_SYSTEM}|{known.kvnr}")) == 1
        known.mpi = known.mpi or self._mpi(known)
        return known.kvnr

    @rule(patient=patients, policies=st.lists(st.sampled_from(POLICIES), min_size=1, max_size=3, unique=True))
    def grant(self, patient: str, policies: list[str]) -> None:
        known = self.session.people[patient]
        self.federation.grant(known.identifier(), *policies)
        known.granted |= set(policies)
        self._consent_is_as_modelled(known)

    @rule(patient=patients, policies=st.lists(st.sampled_from(POLICIES), min_size=1, max_size=3, unique=True))
    def withdraw(self, patient: str, policies: list[str]) -> None:
        known = self.session.people[patient]
        coded = [
            {"name": "policy", "valueCoding": {"system": POLICY_SYSTEM, "code": f"{POLICY_OID}.{p}"}} for p in policies
        ]
        body = _parameters(
            {"name": "personIdentifier", "valueIdentifier": known.identifier()},
            {"name": "domain", "valueString": "MII"},
            *coded,
        )
        with self.federation.client("dic", "tc-admin-token") as client:
            answer = client.post("/ttp-fhir/fhir/gics/$withdrawConsent", json=body)
        assert answer.status_code == 200, answer.text
        known.withdrawn |= set(policies)
        self._consent_is_as_modelled(known)

    @rule(patient=patients, sender=st.sampled_from(CARE_SITES))
    def care_summary(self, patient: str, sender: str) -> None:
        """Send the patient's journey to the other care site: only with treatment consent and the record."""
        known = self.session.people[patient]
        target = next(site for site in CARE_SITES if site != sender)
        held_before = self._held(target, known)
        task = self._start(sender, Process.CARE_SUMMARY, [target_input(target), patient_input(**known.identifier())])
        if self._must_complete(Process.CARE_SUMMARY, known, sender, task):
            known.sites.add(target)
            assert self._held(target, known) == 1, f"the care summary of {patient} did not arrive at {target}"
        else:
            assert self._held(target, known) == held_before, f"a refused care summary changed {target}"

    @rule(patient=patients)
    def data_send(self, patient: str) -> None:
        """Send a pseudonymised extract to the research node: only with research consent and the record."""
        known = self.session.people[patient]
        extracts_before = len(self._extracts())
        inputs = [
            target_input("research"),
            patient_input(**known.identifier()),
            parameter("project", "valueString", PROJECT),
        ]
        task = self._start("dic", Process.DATA_SEND, inputs)
        if self._must_complete(Process.DATA_SEND, known, "dic", task):
            extracted = self._originals([pseudonym for _, values in self._extracts() for pseudonym in values])
            assert known.mpi in extracted.values(), f"the extract of {patient} did not arrive at the research node"
        else:
            assert len(self._extracts()) == extracts_before, f"a refused extract of {patient} reached the research node"

    @rule(patient=patients)
    def feasibility(self, patient: str) -> None:
        """The research node counts a patient's diagnosis everywhere: each site holding them counts at least one."""
        known = self.session.people[patient]
        code = next(r for r in known.record.resources if r["resourceType"] == "Condition")["code"]["coding"][0]["code"]
        criteria = [parameter("condition-code", "valueCoding", {"system": ICD10GM, "code": code})]
        task = self._start("research", Process.FEASIBILITY, criteria)
        assert task["status"] == "completed", task.get("statusReason")
        counts = dict(str(value).split(":", 1) for value in task_output(task, "node-count"))
        assert set(counts) == set(CARE_SITES), counts
        for site, found in counts.items():
            assert found in {"<5", "0"} or _band_of_five(found), f"{site} reported a small or exact count: {found}"
            assert site not in known.sites or found != "0", f"{site} holds {patient} with {code} but counted none"

    # --- invariants ----------------------------------------------------------------------------------

    @invariant()
    def nothing_identifying_on_the_research_node(self) -> None:
        persons = [known.record.person for known in self.session.people.values()]
        held = {kind: self.federation.search("research", kind, self.since) for kind in RESEARCH_TYPES}
        leaks = identifying_leaks(held, persons)
        assert not leaks, leaks

    @invariant()
    def one_pseudonym_per_person_in_the_project_domain(self) -> None:
        extracts = self._extracts()
        problems = [f"Patient/{p['id']} has {len(v)} pseudonyms" for p, v in extracts if len(v) != 1]
        originals = self._originals([pseudonym for _, values in extracts for pseudonym in values])
        seen: dict[str, str] = {}
        for pseudonym, original in originals.items():
            if seen.setdefault(original, pseudonym) != pseudonym:
                problems.append(f"{original} has two extracts: {seen[original]} and {pseudonym}")
            first = self.session.pseudonyms.setdefault(original, pseudonym)
            if first != pseudonym:
                problems.append(f"{original}'s pseudonym was {first}, now {pseudonym}")
        assert not problems, problems

    @invariant()
    def every_exchange_is_audited_at_both_ends(self) -> None:
        problems = []
        for exchange in self.exchanges:
            status = str(exchange.task["status"])
            peers = _peers(exchange.task)
            sent = self._new_events(exchange.sender, exchange.before)
            for peer in peers:
                if not any(names_exchange(e, exchange.process, [peer], AUDIT_OUTCOME[status]) for e in sent):
                    problems.append(f"{exchange.sender} holds no record of its {exchange.process} with {peer}")
                if status == "completed":
                    received = self._new_events(peer, exchange.before)
                    if not any(names_exchange(e, exchange.process, [exchange.sender], "0") for e in received):
                        problems.append(f"{peer} holds no record of the {exchange.process} from {exchange.sender}")
        self.exchanges.clear()
        assert not problems, problems

    # --- helpers -------------------------------------------------------------------------------------

    def _start(self, site: str, process: Process, inputs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Start `process` at `site`, remembering what every node's audit held before, for the invariant."""
        before = {
            s: frozenset(e["id"] for e in self.federation.search(s, "AuditEvent")) for s in (*CARE_SITES, "research")
        }
        task = self.federation.start(site, process, inputs, key=f"stateful-{uuid.uuid4().hex}")
        assert task["status"] in AUDIT_OUTCOME, task
        self.exchanges.append(Exchange(process, site, task, before))
        return task

    def _must_complete(self, process: Process, known: Known, sender: str, task: Mapping[str, Any]) -> bool:
        """Whether the model lets the process through; the Task must have ended accordingly."""
        allowed = known.consents(NEEDED[process]) and sender in known.sites
        expected = "completed" if allowed else "failed"
        reason = task.get("statusReason", {}).get("text")
        assert task["status"] == expected, f"{process} of {known.kvnr} from {sender}: {task['status']} ({reason})"
        return allowed

    def _consent_is_as_modelled(self, known: Known) -> None:
        for policy in (TREATMENT_POLICY, RESEARCH_POLICY):
            config = {"name": "config", "part": [{"name": "unknownStateIsConsideredAsDecline", "valueBoolean": True}]}
            body = _parameters(
                {"name": "personIdentifier", "valueIdentifier": known.identifier()},
                {"name": "domain", "valueString": "MII"},
                {"name": "policy", "valueCoding": {"system": POLICY_SYSTEM, "code": f"{POLICY_OID}.{policy}"}},
                config,
            )
            with self.federation.client("dic", "tc-admin-token") as client:
                answer = client.post("/ttp-fhir/fhir/gics/$isConsented", json=body).json()
            [consented] = [p["valueBoolean"] for p in answer["parameter"] if p["name"] == "consented"]
            assert consented is known.consents(policy), f"{known.kvnr} .{policy}: the trust centre says {consented}"

    def _mpi(self, known: Known) -> str:
        """The person's master id: only the site admin learns it (nodes get their own id of a person)."""
        asked = _parameters(
            {"name": "identifier", "valueIdentifier": known.identifier()}, {"name": "source", "valueString": "dic"}
        )
        with self.federation.client("dic", "tc-admin-token") as client:
            answer = client.post("/ttp-fhir/fhir/epix/$requestMPI", json=asked).json()
        [mpi] = [p["valueIdentifier"]["value"] for p in answer["parameter"] if p["name"] == "mpi"]
        assert isinstance(mpi, str)
        return mpi

    def _held(self, site: str, known: Known) -> int:
        return len(self.federation.search(site, f"Patient?identifier={KVNR_SYSTEM}|{known.kvnr}"))

    def _extracts(self) -> list[tuple[dict[str, Any], list[str]]]:
        """The research node's Patients in the project's domain, each with its pseudonyms there."""
        found = [(p, pseudonyms_of(p).get(DOMAIN, [])) for p in self.federation.search("research", "Patient")]
        return [(patient, values) for patient, values in found if values]

    def _originals(self, pseudonyms: Sequence[str]) -> dict[str, str]:
        """Pseudonym -> original (the MPI id), as the trust centre's gPAS resolves them; every one must be known."""
        if not pseudonyms:
            return {}
        asked = [{"name": "pseudonym", "valueString": p} for p in pseudonyms]
        with self.federation.client("dic", "tc-admin-token") as client:
            answer = client.post(
                "/ttp-fhir/fhir/gpas/$dePseudonymize",
                json=_parameters({"name": "target", "valueString": DOMAIN}, *asked),
            ).json()
        resolved = {}
        for part in answer.get("parameter", []):
            values = {sub["name"]: sub.get("valueIdentifier", {}).get("value") for sub in part.get("part", [])}
            assert part["name"] == "original", f"the trust centre does not know {values.get('pseudonym')}"
            resolved[values["pseudonym"]] = values["original"]
        return resolved

    def _new_events(self, site: str, before: Mapping[str, frozenset[str]]) -> list[dict[str, Any]]:
        return [event for event in self.federation.search(site, "AuditEvent") if event["id"] not in before[site]]


def _peers(task: Mapping[str, Any]) -> list[str]:
    """The sites a Task exchanged with: its target, or those a feasibility count names."""
    targets = [item["valueString"] for item in task.get("input", []) if item["type"]["coding"][0]["code"] == "target"]
    return targets or [str(count).split(":", 1)[0] for count in task_output(task, "node-count")]


def _parameters(*parts: Mapping[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [dict(part) for part in parts]}


def test_random_journeys_keep_the_invariants(federation: Federation) -> None:
    session = Session()
    run_state_machine_as_test(lambda: Journeys(federation, session), settings=JOURNEYS)


def _band_of_five(count: str) -> bool:
    """A count of five or more as it leaves a node: the band `5-9`, `10-14`, ... (docs/federation.md)."""
    low, dash, high = count.partition("-")
    return (
        bool(dash)
        and low.isdigit()
        and high.isdigit()
        and int(low) >= 5
        and int(low) % 5 == 0
        and int(high) == int(low) + 4
    )
