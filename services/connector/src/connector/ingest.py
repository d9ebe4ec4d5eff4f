"""Ingest: validate (structure, then profiles) -> link at the trust centre -> transform -> one HAPI transaction.

Where the node's policy lets nothing the profile validator finds refuse the input (`warn`, and always for
what a peer sends), the profiles are judged while the input is linked and stored: the validator and the
write are the same HAPI's, and on two cores each then has one.

All-or-nothing: nothing is written unless every entry is valid, and then everything is written in
one HAPI transaction (atomic). Linkage at the trust centre comes first and is idempotent (the same
identifiers give the same person id), so a failure after it leaves nothing that a retry would duplicate.
A person's Patient is merged with the node's record of them (as this connector last wrote it, else
read) and written only over that version (`ifMatch`): two sources ingesting the same person at once
cannot drop each other's identifiers; the one HAPI refuses reads the record and tries again.

What a peer sends is keyed under the peer, except records of this node it sent that peer before
(`connector.sent_records`): a peer cannot overwrite what another node, or this one, holds.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from connector.hapi import HapiClient, Read
from connector.known_persons import KnownPersons
from connector.profiles import Policy, ProfileCheck
from connector.resource_ids import ResourceIds
from connector.transform import (
    PERSON_SYSTEM,
    Origins,
    first_origin,
    person_key,
    source_id,
    source_system,
    to_transaction,
)
from connector.trustcentre_client import TrustCentreClient
from connector.upstream import UpstreamRefused, UpstreamUnavailable, diagnostics
from connector.validation import InvalidInput, KnownFit, Locate, Problem, bundle_location, join_path, validate
from servicekit.timing import ServerTiming


@dataclass(frozen=True)
class IngestResult:
    """HAPI's transaction-response, the ids of the persons ingested (for the audit), where time went.

    `warnings`: entry index -> what the profile validator said of it that did not refuse it; `errors_stored`:
    those of them that are errors the node's policy lets through (what the audit record names).
    """

    response: dict[str, Any]
    person_ids: tuple[str, ...]
    timing: ServerTiming
    warnings: Mapping[int, tuple[Problem, ...]] = field(default_factory=dict)
    errors_stored: tuple[Problem, ...] = ()

    def errors_stored_note(self) -> str:
        """What the audit record of a bundle stored despite profile errors names: how many, and the first."""
        if not self.errors_stored:
            return ""
        first = self.errors_stored[0]
        return (
            f"stored with {len(self.errors_stored)} profile error(s) reported as warnings,"
            f" first {first.expression}: {first.message}"
        )


#: Writes of one bundle tried at most while other ingests keep changing its persons' records (HAPI's 409).
#: Each round lets at least one writer of a record through, so n records of one person sent at once need up
#: to n tries: with 8 at once through two connector pods, 5 tries left one or two of them refused.
PERSON_WRITE_ATTEMPTS = 12
#: Seconds the n-th retry waits at most (times n, at random), so colliding writers do not collide again.
RETRY_JITTER_S = 0.05

#: Appended to an error the node's policy lets through (`warn`), so the reader knows it is no mere warning.
STORED_ERROR = "[an error, stored: this node's validation policy reports it as a warning]"

#: Identifier system of what research extracts from a site are stored under at the receiving node.
EXTRACT_SYSTEM_BASE = "https://hubnode.org/fhir/sid/research-extract/"

#: Which of a peer's origin keys (system, value) under this node's own origin were sent to that peer.
SentTo = Callable[[str, Sequence[tuple[str, str]]], frozenset[tuple[str, str]]]


@dataclass(frozen=True)
class Ingester:
    """Ingests entries sent by a source into the node's HAPI; remembers fit resources, persons' records.

    `site` is this node; `sent_to` answers which of this node's records went to a peer before;
    `profiles` checks resources against the profiles they declare (None: not at all); `resource_ids`
    says whether resources are written at derived ids (None: by identifier).
    """

    hapi: HapiClient
    trustcentre: TrustCentreClient
    source_system_base: str
    site: str
    sent_to: SentTo
    profiles: ProfileCheck | None = None
    resource_ids: ResourceIds | None = None
    known_fit: KnownFit = field(default_factory=KnownFit)
    known_persons: KnownPersons = field(default_factory=KnownPersons)

    async def ingest(
        self,
        entries: Sequence[Mapping[str, Any]],
        sender: str,
        locate: Locate = bundle_location,
        *,
        pseudonymised: bool = False,
    ) -> IngestResult:
        """Store `entries` as sent by `sender` (this node's site, or a peer's); InvalidInput if any is unfit.

        A `pseudonymised` research extract is not linked at the trust centre (it names nobody) and is
        keyed under EXTRACT_SYSTEM_BASE, so no source system's identifier reaches a research node.
        """
        timing = ServerTiming()
        with timing.phase("validate"):
            problems = validate(entries, locate, self.known_fit)
        if problems:
            raise InvalidInput(problems)
        policy = None if self.profiles is None else self.profiles.policy_for(from_peer=sender != self.site)
        if policy is None or policy.may_refuse:
            with timing.phase("profiles"):
                warnings, errors_stored = await self._profile_warnings(entries, locate, policy)
            response, persons = await self._store(entries, sender, locate, timing, pseudonymised=pseudonymised)
        else:  # nothing the validator finds can refuse this input: it is judged while it is stored
            checking = asyncio.create_task(self._judged_beside(entries, locate, policy, timing))
            try:
                response, persons = await self._store(entries, sender, locate, timing, pseudonymised=pseudonymised)
            except BaseException:
                checking.cancel()
                raise
            warnings, errors_stored = await checking
        return IngestResult(response, persons, timing, warnings, errors_stored)

    async def _store(
        self,
        entries: Sequence[Mapping[str, Any]],
        sender: str,
        locate: Locate,
        timing: ServerTiming,
        *,
        pseudonymised: bool,
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Link, prepare and write `entries` in one transaction; HAPI's answer and the persons written."""
        searchable = await self.hapi.searchable_by_identifier()
        derived = self.resource_ids is not None and await self.resource_ids.derived()
        if pseudonymised:
            system = f"{EXTRACT_SYSTEM_BASE}{sender}"
            with timing.phase("prepare"):
                transaction = to_transaction(entries, system, searchable=searchable, derived_ids=derived)
            with timing.phase("store"):
                return await self.hapi.transaction(transaction), ()
        system = source_system(self.source_system_base, sender)
        with timing.phase("link"):
            persons = await self._link(entries, sender, locate)
        linked = [
            {**entry, "resource": with_person(entry["resource"], persons[index])} if index in persons else entry
            for index, entry in enumerate(entries)
        ]
        origins = await asyncio.to_thread(self._origins, entries, sender)
        records = {index: known for index, person in persons.items() if (known := self.known_persons.recall(person))}
        unknown = {index: person for index, person in persons.items() if index not in records}
        with timing.phase("prepare"):  # records not remembered are read while the transaction is made
            transaction, read = await asyncio.gather(
                asyncio.to_thread(
                    functools.partial(to_transaction, linked, system, origins, searchable, derived_ids=derived)
                ),
                self._records(unknown),
            )
        records.update(read)
        attempt = 1
        while True:
            guarded = with_person_records(transaction, records)
            try:
                with timing.phase("store"):
                    response = await self.hapi.transaction(guarded)
            except UpstreamRefused as refused:
                if refused.status != HTTPStatus.CONFLICT:
                    raise
                for person in persons.values():
                    self.known_persons.forget(person)
                if attempt == PERSON_WRITE_ATTEMPTS:
                    raise
            else:
                self._remember(persons, guarded, response)
                return response, tuple(persons.values())
            await asyncio.sleep(random.uniform(0, RETRY_JITTER_S * attempt))  # noqa: S311 -- jitter, not a secret
            attempt += 1
            with timing.phase("prepare"):
                records = await self._records(persons)

    async def _judged_beside(
        self, entries: Sequence[Mapping[str, Any]], locate: Locate, policy: Policy, timing: ServerTiming
    ) -> tuple[dict[int, tuple[Problem, ...]], tuple[Problem, ...]]:
        """The profile findings of input that is stored whatever they are; a validator that failed is one of them.

        The input is stored by then, so a failed check cannot refuse it: it is reported as a stored
        error (and so audited), never as a refusal the source would take for "nothing was stored".
        """
        with timing.phase("profiles"):
            try:
                return await self._profile_warnings(entries, locate, policy)
            except (InvalidInput, UpstreamUnavailable) as failed:
                why = "; ".join(p.message for p in failed.problems) if isinstance(failed, InvalidInput) else str(failed)
                return {}, (Problem("Bundle", f"not checked against its profiles ({why}) {STORED_ERROR}"),)

    async def _profile_warnings(
        self, entries: Sequence[Mapping[str, Any]], locate: Locate, policy: Policy | None
    ) -> tuple[dict[int, tuple[Problem, ...]], tuple[Problem, ...]]:
        """Entry index -> the profile findings that let it be stored, and the errors among them; or InvalidInput."""
        if self.profiles is None or policy is None:
            return {}, ()
        try:
            findings = await self.profiles.findings(entries)
        except UpstreamRefused as refused:
            unread = f"the profile validator could not read the resources: {diagnostics(refused.outcome)}"
            problem = Problem("Bundle", unread)
            raise InvalidInput([problem]) from refused
        refusing: list[Problem] = []
        warnings: dict[int, tuple[Problem, ...]] = {}
        errors: list[Problem] = []
        for index, found in findings.items():
            reported = []
            for finding in found:
                place = join_path(locate(index), finding.path)
                if policy.refuses(finding):
                    refusing.append(Problem(place, finding.text))
                elif finding.severity == "error":
                    errors.append(Problem(place, f"{finding.text} {STORED_ERROR}"))
                    reported.append(errors[-1])
                else:
                    reported.append(Problem(place, finding.text))
            warnings[index] = tuple(reported)
        if refusing:
            raise InvalidInput(refusing)
        return warnings, tuple(errors)

    def _origins(self, entries: Sequence[Mapping[str, Any]], sender: str) -> Origins:
        """The origins honoured for `sender`: any from this node's own sources; from a peer, its own and round trips."""
        base = self.source_system_base
        if sender == self.site:
            return Origins(base, lambda _system, _value: True)
        own, theirs = source_system(base, self.site), source_system(base, sender)
        carried = [first_origin(entry["resource"], base) for entry in entries]
        returning = self.sent_to(sender, [(key.system, key.value) for key in carried if key and key.system == own])
        return Origins(base, lambda system, value: system == theirs or (system, value) in returning)

    def _remember(self, persons: Mapping[int, str], written: Mapping[str, Any], response: Mapping[str, Any]) -> None:
        """Remember each person's Patient as written, at the version HAPI's answer names for it."""
        answers = response.get("entry", [])
        for index, person in persons.items():
            entry = answers[index] if index < len(answers) else None
            answer = entry.get("response") if isinstance(entry, dict) else None
            if isinstance(answer, dict):
                self.known_persons.remember(person, written["entry"][index]["resource"], answer)
            else:
                self.known_persons.forget(person)

    async def _records(self, persons: Mapping[int, str]) -> dict[int, Read]:
        """Entry index -> the node's record of that entry's person."""
        records = await asyncio.gather(*(self.hapi.read(person_key(person).request_url) for person in persons.values()))
        return dict(zip(persons, records, strict=True))

    async def _link(self, entries: Sequence[Mapping[str, Any]], sender: str, locate: Locate) -> dict[int, str]:
        """Entry index -> this node's id of each Patient's person, linked at the trust centre.

        Each record is linked by an identifier in this node's own source system, which it may assert:
        the source's id for the record, and for a peer's record also the peer's name (`<peer>/Patient/<id>`).
        """
        own = source_system(self.source_system_base, self.site)
        prefix = "" if sender == self.site else f"{sender}/"
        persons: dict[int, str] = {}
        for index, entry in enumerate(entries):
            if entry["resource"]["resourceType"] != "Patient":
                continue
            key = (own, f"{prefix}Patient/{source_id(entry)}")
            try:
                persons[index] = await self.trustcentre.person_id(entry["resource"], key)
            except UpstreamRefused as refused:
                problem = Problem(locate(index), f"the trust centre refused to link it: {diagnostics(refused.outcome)}")
                raise InvalidInput([problem]) from refused
        return persons


def with_person_records(transaction: Mapping[str, Any], records: Mapping[int, Read]) -> dict[str, Any]:
    """`transaction` with each person's Patient merged with the node's record of them, guarded by its version.

    The `ifMatch` makes HAPI refuse the whole transaction (409) if another ingest changed the record
    since it was read, instead of silently dropping the identifiers that ingest added; the caller then
    reads again. `W/"0"` stands for "no record yet": HAPI creates the Patient if it still has none,
    and refuses if someone created it meanwhile. After a deletion HAPI has no version a read could
    name, so the Patient is written unguarded, as the source sent it.
    """
    entries = list(transaction["entry"])
    for index, record in records.items():
        entry, stored = entries[index], record.resource
        resource = entry["resource"] if stored is None else with_identifiers_of(entry["resource"], stored)
        request = dict(entry["request"])
        if stored is not None:
            request["ifMatch"] = f'W/"{stored.get("meta", {}).get("versionId", "0")}"'
        elif not record.deleted:
            request["ifMatch"] = 'W/"0"'
        entries[index] = {**entry, "resource": resource, "request": request}
    return {**transaction, "entry": entries}


def with_identifiers_of(patient: dict[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
    """`patient` (as prepared for HAPI) keeping the identifiers the node's record of the person already has.

    The Patient is replaced by whichever source sent it last; its other sources' identifiers must stay,
    or their later references (`Patient?identifier=<their source>|...`) would find nobody. They are
    added after the transform, as HAPI stored them: an `assigner` reference among them is HAPI's own.
    """
    identifiers = list(patient.get("identifier", []))
    keys = {(i.get("system"), i.get("value")) for i in identifiers}
    for identifier in stored.get("identifier", []):
        if (identifier.get("system"), identifier.get("value")) not in keys:
            identifiers.append(identifier)
            keys.add((identifier.get("system"), identifier.get("value")))
    return {**patient, "identifier": identifiers}


def with_person(patient: Mapping[str, Any], person: str) -> dict[str, Any]:
    """`patient` with this node's id of the person as its one identifier of the person system."""
    identifiers = [i for i in patient.get("identifier", []) if i.get("system") != PERSON_SYSTEM]
    return {**patient, "identifier": [*identifiers, {"system": PERSON_SYSTEM, "value": person}]}
