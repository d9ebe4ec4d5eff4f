"""The operations of the MOSAIC TTP-FHIR E-PIX IG under `/ttp-fhir/fhir/epix/`, on the trust centre's MPI.

`$addPatient` and `$updatePatient` are linkage a node may ask for (role `linkage`): a node's caller
speaks for its own site (`source` must be it), names persons by the ids its node knows them by and
sees only the identities its own source sent, never an MPI. The review operations expose MPIs and
act across sites, so only the site's administrator (a caller without a site, role `linkage-review`)
may call them: `$queryPossibleMatches`, `$addPossibleMatch`, `$removePossibleMatches`,
`$assignIdentity`, `$assignIdentityByIdentifier`, `$setReferenceIdentity`.

The trust centre keeps one MPI: `domain` must be a declared domain the caller may use, and is
echoed as the Person's managing organisation, but does not split the persons. Demographics never
merge two persons on their own (`trustcentre.linkage`): a new identity similar to a known one gets
`POSSIBLE_MATCH` and goes to review, where E-PIX would link a `MATCH` automatically.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import Connection, select

from servicekit.fhir import FhirError, operation_outcome
from servicekit.purpose import OPERATIONS
from trustcentre import epix_resources, identities
from trustcentre.auth import Role
from trustcentre.db import audit_log, persons
from trustcentre.epix_api import MPI_SYSTEM as HUBNODE_MPI_SYSTEM
from trustcentre.epix_api import asserter_of
from trustcentre.epix_resources import IDENTITY_SYSTEM, MATCH_STATUS_SYSTEM, MPI_SYSTEM, SAVE_ACTION_SYSTEM
from trustcentre.fhir import Parameters, parameters
from trustcentre.identities import Stored
from trustcentre.linkage import (
    Identifier,
    LinkResult,
    add_match,
    attach,
    link,
    match_of,
    open_matches,
    remove_matches,
    resolve,
)
from trustcentre.matching import Demographics, classify, similarity
from trustcentre.persons import PERSON_SYSTEM, PersonIds
from trustcentre.web import Context, Endpoint, check_batch, operation

SAVE_ACTIONS = frozenset(
    {"SAVE_ALL", "DONT_SAVE", "DONT_SAVE_ON_PERFECT_MATCH", "DONT_SAVE_ON_PERFECT_MATCH_EXCEPT_CONTACTS"}
)
MPI_SYSTEMS = frozenset({MPI_SYSTEM, HUBNODE_MPI_SYSTEM})
_LARGEST_ID = 2**63


def epix_ig_endpoints(person_ids: PersonIds, domains: Collection[str]) -> Mapping[str, Endpoint]:  # noqa: C901, PLR0915 -- one closure per operation
    """Operation name -> endpoint, for the domains the stack declared."""

    def domain_of(context: Context, params: Parameters, *, required: bool = True) -> str | None:
        name = params.string("domain", required=required)
        if name is None:
            return None
        if name not in domains:
            raise FhirError(404, "not-found", f"unknown domain {name!r}", ("domain",))
        context.caller.require_domain(name, "domain")
        return name

    def person_of(context: Context, connection: Connection, params: Parameters, name: str) -> str:
        """The MPI a parameter names: by MPI (administrators) or by the id the caller's node knows the person by."""
        system, value = _one_identifier(params, name)
        site = context.caller.site
        if site is not None and system != PERSON_SYSTEM:
            raise FhirError(
                403, "forbidden", f"{name}: a node names persons by its own person ids ({PERSON_SYSTEM})", (name,)
            )
        if system == PERSON_SYSTEM and site is not None:
            mpi = person_ids.resolve(connection, site, [value]).get(value)
        elif system in MPI_SYSTEMS:
            mpi = connection.execute(select(persons.c.mpi).where(persons.c.mpi == value)).scalar_one_or_none()
        else:
            raise FhirError(400, "invalid", f"{name}: system must be {MPI_SYSTEM}", (name,))
        if mpi is None:
            raise FhirError(404, "not-found", f"{name}: no person {value!r}", (name,))
        return str(mpi)

    def person_answer(context: Context, connection: Connection, mpi: str, domain: str | None) -> list[dict[str, Any]]:
        """The `mpiPerson` and `identity` parameters of one person, as far as the caller may see them."""
        site = context.caller.site
        rows = identities.of_person(connection, mpi)
        if site is not None:
            rows = [row for row in rows if row["source"] == site]
            identifier = {"system": PERSON_SYSTEM, "value": person_ids.of(connection, site, [mpi])[mpi]}
        else:
            identifier = {"system": MPI_SYSTEM, "value": mpi}
        reference = connection.execute(select(persons.c.reference_identity).where(persons.c.mpi == mpi)).scalar()
        person = epix_resources.person(identifier, rows, reference, domain)
        return [
            {"name": "mpiPerson", "resource": person},
            *({"name": "identity", "resource": epix_resources.identity(r)} for r in rows),
        ]

    def match_answer(
        connection: Connection, match: Mapping[str, Any], item: str, score: str, result: str
    ) -> dict[str, Any]:
        """One possible match with the two persons' identities (reference identity, else the oldest)."""
        items = [{"name": item, "resource": _face_of(connection, match[side])} for side in ("mpi", "candidate_mpi")]
        return {
            "name": "match",
            "part": [
                *items,
                {"name": score, "valueDecimal": match["score"]},
                {"name": result, "valueDecimal": match["score"]},
                {"name": "linkId", "valueInteger": match["id"]},
                *([{"name": "comment", "valueString": match["comment"]}] if match["comment"] else []),
            ],
        }

    def add_patient(context: Context, params: Parameters) -> dict[str, Any]:
        domain = domain_of(context, params)
        asserter = asserter_of(context.caller, params)
        save = _save_action(params)
        force_reference = _required_boolean(params, "forceReferenceUpdate")
        sent = params.resources("identity", "Patient", minimum=1)
        check_batch(context, len(sent), "identities")
        read = [epix_resources.read_identity(location, patient) for location, patient in sent]
        answers = []
        with context.engine.begin() as connection:
            subjects: list[str] = []
            ignored = 0
            for (_, patient), identity in zip(sent, read, strict=True):
                trial = connection.begin_nested() if save == "DONT_SAVE" else None
                result = link(connection, identity.identifiers, asserter, identity.demographics, identity.resource)
                if force_reference and result.identity is not None:
                    identities.set_reference(connection, result.mpi, result.identity)
                if trial is not None:
                    trial.rollback()
                exists = trial is None or not result.created
                answers.append(
                    {
                        "name": "matchResult",
                        "part": [
                            {"name": "sourceIdentity", "resource": patient},
                            {
                                "name": "matchStatus",
                                "valueCoding": epix_resources.coding(MATCH_STATUS_SYSTEM, _status(result)),
                            },
                            *(person_answer(context, connection, result.mpi, domain) if exists else []),
                        ],
                    }
                )
                subjects += [result.mpi, *(i.value for i in identity.identifiers)]
                ignored += len(result.ignored)
            detail = f"domain {domain}; source {asserter.source}; saveAction {save}" + (
                f"; {ignored} identifiers not its own" if ignored else ""
            )
            audit_log.record(connection, context.success("$addPatient", subjects, OPERATIONS, detail))
        return parameters(*answers)

    def update_patient(context: Context, params: Parameters) -> dict[str, Any]:
        domain = domain_of(context, params)
        asserter = asserter_of(context.caller, params)
        force = _required_boolean(params, "force")
        [(location, patient)] = params.resources("identity", "Patient", minimum=1)[:1]
        identity = epix_resources.read_identity(location, patient)
        with context.engine.begin() as connection:
            mpi = person_of(context, connection, params, "mpiIdentifier")
            if identity.demographics is not None and not force:
                _check_alike(connection, mpi, identity.demographics)
            added = attach(connection, mpi, identity.identifiers, asserter)
            stored = (
                identities.store(connection, mpi, identity.demographics, asserter.source, identity.resource)[1]
                if identity.demographics is not None
                else None
            )
            unchanged = not added and stored in {None, Stored.SAID_BEFORE}
            status = "PERFECT_MATCH" if unchanged else "PERFECT_MATCH_WITH_UPDATE"
            answer = person_answer(context, connection, mpi, domain)
            subjects = [mpi, *(i.value for i in identity.identifiers)]
            detail = f"domain {domain}; source {asserter.source}; {status}" + ("; forced" if force else "")
            audit_log.record(connection, context.success("$updatePatient", subjects, OPERATIONS, detail))
        return parameters(
            {"name": "matchStatus", "valueCoding": epix_resources.coding(MATCH_STATUS_SYSTEM, status)}, *answer
        )

    def query_possible_matches(context: Context, params: Parameters) -> dict[str, Any]:
        _administrator(context)
        domain = domain_of(context, params)
        offset = params.integer("_offset", required=False) or 0
        count = params.integer("_count", required=False)
        if count is not None:
            check_batch(context, count, "matches")
        with context.engine.begin() as connection:
            mpi = person_of(context, connection, params, "mpiId") if any(params.named("mpiId")) else None
            matches = open_matches(connection, mpi, offset, count if count is not None else context.max_batch)
            answer = [match_answer(connection, m, "matchItem", "matchScore", "matchResult") for m in matches]
            detail = f"domain {domain}; {len(matches)} matches"
            audit_log.record(
                connection, context.success("$queryPossibleMatches", [mpi] if mpi else [], OPERATIONS, detail)
            )
        return parameters(*answer)

    def add_possible_match(context: Context, params: Parameters) -> dict[str, Any]:
        _administrator(context)
        domain = domain_of(context, params)
        with context.engine.begin() as connection:
            mpi = person_of(context, connection, params, "mpiId")
            alias = person_of(context, connection, params, "aliasMpiId")
            match = add_match(connection, mpi, alias, context.caller.name)
            answer = match_answer(connection, match, "item", "score", "result")
            detail = f"domain {domain}; match {match['id']}"
            audit_log.record(connection, context.success("$addPossibleMatch", [mpi, alias], OPERATIONS, detail))
        return parameters(answer)

    def remove_possible_matches(context: Context, params: Parameters) -> dict[str, Any]:
        _administrator(context)
        domain = domain_of(context, params)
        link_ids = params.integers("linkId", minimum=1)
        check_batch(context, len(link_ids), "matches")
        comment = params.string("comment", required=False)
        with context.engine.begin() as connection:
            remove_matches(connection, link_ids, context.caller.name, comment)
            detail = f"domain {domain}; removed {', '.join(map(str, link_ids))}" + (f": {comment}" if comment else "")
            audit_log.record(connection, context.success("$removePossibleMatches", [], OPERATIONS, detail))
        return _information(f"removed {len(set(link_ids))} possible match(es).")

    def assign_identity(context: Context, params: Parameters) -> dict[str, Any]:
        _administrator(context)
        domain = domain_of(context, params, required=False)
        link_id = params.integer("linkId")
        identity_id = _identity_reference(params)
        comment = params.string("comment", required=False)
        with context.engine.begin() as connection:
            target = identities.find(connection, identity_id, "identityReference")["mpi"]
            if target not in {(pair := match_of(connection, link_id, "linkId"))["mpi"], pair["candidate_mpi"]}:
                raise FhirError(
                    422,
                    "business-rule",
                    f"identity {identity_id} is in neither person of match {link_id}",
                    ("identityReference",),
                )
            match = resolve(
                connection, link_id, "link", context.caller.name, keep=target, comment=comment, where="linkId"
            )
            detail = f"domain {domain}; match {link_id} linked into the person of identity {identity_id}"
            subjects = [match["mpi"], match["candidate_mpi"]]
            audit_log.record(connection, context.success("$assignIdentity", subjects, OPERATIONS, detail))
        return _information("match resolved, identity moved.")

    def assign_identity_by_identifier(context: Context, params: Parameters) -> dict[str, Any]:
        _administrator(context)
        domain = domain_of(context, params, required=False)
        system, value = _one_identifier(params, "identityIdentifier")
        comment = params.string("comment", required=False)
        with context.engine.begin() as connection:
            target = person_of(context, connection, params, "mpiIdentifier")
            if system == IDENTITY_SYSTEM:
                if not (value.isascii() and value.isdigit() and int(value) < _LARGEST_ID):
                    raise FhirError(404, "not-found", f"no identity {value!r}", ("identityIdentifier",))
                source = identities.find(connection, int(value), "identityIdentifier")["mpi"]
                moved = [int(value)]
                identities.move(connection, moved, target)
            else:
                source, moved = identities.move_by_identifier(connection, Identifier(system, value), target)
            detail = f"domain {domain}; identities {moved} from {source} to {target}" + (
                f": {comment}" if comment else ""
            )
            audit_log.record(
                connection, context.success("$assignIdentityByIdentifier", [source, target], OPERATIONS, detail)
            )
        return _information("identity moved.")

    def set_reference_identity(context: Context, params: Parameters) -> dict[str, Any]:
        _administrator(context)
        domain = domain_of(context, params, required=False)
        identity_id = _identity_reference(params)
        comment = params.string("comment", required=False)
        with context.engine.begin() as connection:
            mpi = person_of(context, connection, params, "mpiId")
            identities.set_reference(connection, mpi, identity_id)
            answer = person_answer(context, connection, mpi, domain)
            detail = f"domain {domain}; reference identity {identity_id}" + (f": {comment}" if comment else "")
            audit_log.record(connection, context.success("$setReferenceIdentity", [mpi], OPERATIONS, detail))
        return parameters(*answer)

    return {
        "$addPatient": operation("$addPatient", Role.LINKAGE, add_patient),
        "$updatePatient": operation("$updatePatient", Role.LINKAGE, update_patient),
        "$queryPossibleMatches": operation("$queryPossibleMatches", Role.LINKAGE_REVIEW, query_possible_matches),
        "$addPossibleMatch": operation("$addPossibleMatch", Role.LINKAGE_REVIEW, add_possible_match),
        "$removePossibleMatches": operation("$removePossibleMatches", Role.LINKAGE_REVIEW, remove_possible_matches),
        "$assignIdentity": operation("$assignIdentity", Role.LINKAGE_REVIEW, assign_identity),
        "$assignIdentityByIdentifier": operation(
            "$assignIdentityByIdentifier", Role.LINKAGE_REVIEW, assign_identity_by_identifier
        ),
        "$setReferenceIdentity": operation("$setReferenceIdentity", Role.LINKAGE_REVIEW, set_reference_identity),
    }


def _one_identifier(params: Parameters, name: str) -> tuple[str, str]:
    found = params.identifiers(name)
    if len(found) > 1:
        raise FhirError(400, "invalid", f"parameter {name!r} may appear only once", (name,))
    return found[0]


def _administrator(context: Context) -> None:
    """Refuse a node's caller: these operations show MPIs and act across sites."""
    if context.caller.site is not None:
        raise FhirError(
            403,
            "forbidden",
            f"{context.caller.name!r} speaks for {context.caller.site!r}; this is for the site administrator",
        )


def _save_action(params: Parameters) -> str:
    coding = params.coding("saveAction")
    if coding is None:
        raise FhirError(400, "required", "parameter 'saveAction' is required", ("saveAction",))
    if coding["system"] != SAVE_ACTION_SYSTEM or coding["code"] not in SAVE_ACTIONS:
        raise FhirError(
            400,
            "invalid",
            f"saveAction: a code of {SAVE_ACTION_SYSTEM}: {', '.join(sorted(SAVE_ACTIONS))}",
            ("saveAction",),
        )
    return str(coding["code"])


def _required_boolean(params: Parameters, name: str) -> bool:
    if not any(params.named(name)):
        raise FhirError(400, "required", f"parameter {name!r} is required", (name,))
    return params.boolean(name, default=False)


def _status(result: LinkResult) -> str:
    """The IG's match status of one linked identity."""
    if result.multiple:
        return "MULTIPLE_MATCH"
    if result.created:
        return "POSSIBLE_MATCH" if result.possible_matches else "NO_MATCH"
    if result.stored == Stored.SAID_BEFORE:
        return "PERFECT_MATCH"
    return "PERFECT_MATCH_WITH_UPDATE" if result.stored == Stored.UPDATED else "MATCH"


def _check_alike(connection: Connection, mpi: str, sent: Demographics) -> None:
    """Refuse (409) an update that resembles none of the person's identities, unless it is forced."""
    known = [identities.demographics_of(row) for row in identities.of_person(connection, mpi)]
    best = max((similarity(sent, other) for other in known), default=1.0)
    if classify(best) == "none":
        raise FhirError(
            409,
            "conflict",
            f"the identity resembles none of {mpi}'s (best score {best:.2f}); force=true stores it",
            ("identity",),
        )


def _face_of(connection: Connection, mpi: str) -> dict[str, Any]:
    """The identity that stands for a person in a match: its reference identity, else its oldest one."""
    rows = identities.of_person(connection, mpi)
    reference = connection.execute(select(persons.c.reference_identity).where(persons.c.mpi == mpi)).scalar()
    chosen = next((row for row in rows if row["id"] == reference), rows[0] if rows else None)
    if chosen is None:  # linked by identifiers only: the identifiers are all there is to show
        return {"resourceType": "Patient", "identifier": identities.identifiers_of(connection, mpi), "active": True}
    return epix_resources.identity(chosen)


def _identity_reference(params: Parameters) -> int:
    """`identityReference` as `valueReference` `Patient/<id>` or (as in the IG's own example) `valueId` `<id>`."""
    found = list(params.named("identityReference"))
    if not found:
        raise FhirError(400, "required", "parameter 'identityReference' is required", ("identityReference",))
    location, part = found[0]
    reference = part.get("valueReference")
    raw = reference.get("reference") if isinstance(reference, dict) else part.get("valueId")
    if isinstance(raw, str) and raw.startswith("Patient/"):
        raw = raw.removeprefix("Patient/")
    if not (isinstance(raw, str) and raw.isascii() and raw.isdigit() and int(raw) < _LARGEST_ID):
        raise FhirError(400, "invalid", f"{location} (identityReference) must reference Patient/<id>", (location,))
    return int(raw)


def _information(diagnostics: str) -> dict[str, Any]:
    return operation_outcome("informational", diagnostics, severity="information")
