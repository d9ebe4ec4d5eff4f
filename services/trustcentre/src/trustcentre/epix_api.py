"""Identity linkage operations under `/ttp-fhir/fhir/epix/` (named after E-PIX's `$requestMPI`).

`$requestMPI`: identifiers (and optionally demographics) from a source -> the person, and any possible
matches for review. A node's caller speaks for its own site (never for the `source` a request names)
and gets the id its node knows the person by (`person`, see `trustcentre.persons`), never the MPI;
the site's administrator gets the MPI. `$possibleMatches` lists open matches; `$resolvePossibleMatch`
links or separates them (a reviewer's decision, audited).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from servicekit.auth import Caller
from servicekit.fhir import FhirError
from servicekit.purpose import OPERATIONS
from trustcentre.auth import Role
from trustcentre.db import audit_log
from trustcentre.fhir import Parameters, parameters
from trustcentre.linkage import Asserter, Identifier, LinkResult, link, open_matches, resolve
from trustcentre.matching import SEXES, Demographics
from trustcentre.persons import PERSON_SYSTEM, PersonIds
from trustcentre.web import Context, Endpoint, check_batch, operation

MPI_SYSTEM = "urn:hubnode:mpi"


def _identifiers(context: Context, params: Parameters) -> list[Identifier]:
    found = [Identifier(system, value) for system, value in params.identifiers("identifier")]
    check_batch(context, len(found), "identifiers")
    return found


def _demographics(params: Parameters) -> Demographics | None:
    family = params.string("family", required=False)
    given = params.string("given", required=False)
    if family is None and given is None:
        return None
    sex = params.string("gender", required=False)
    if sex is not None and sex not in SEXES:
        raise FhirError(400, "invalid", f"gender {sex!r}: one of {', '.join(sorted(SEXES))}", ("gender",))
    return Demographics(family or "", given or "", params.date("birthDate"), sex)


def asserter_of(caller: Caller, params: Parameters) -> Asserter:
    """The source the identifiers come from: a node's caller's own site, never one the request names."""
    named = params.string("source", required=caller.site is None)
    if caller.site is None:
        return Asserter(str(named), None)
    if named is not None and named != caller.site:
        raise FhirError(403, "forbidden", f"{caller.name!r} speaks for {caller.site!r}, not {named!r}", ("source",))
    return Asserter(caller.site, caller.identifier_systems)


def _result(result: LinkResult, person: dict[str, str]) -> dict[str, Any]:
    """The answer: the person as the caller may know them, and matches waiting for review (MPIs only to admins)."""
    scoped = person["system"] != MPI_SYSTEM
    return parameters(
        {"name": "person" if scoped else "mpi", "valueIdentifier": person},
        {"name": "created", "valueBoolean": result.created},
        *(
            {
                "name": "possibleMatch",
                "part": [
                    {"name": "id", "valueString": str(match_id)},
                    *(
                        []
                        if scoped
                        else [{"name": "candidate", "valueIdentifier": {"system": MPI_SYSTEM, "value": candidate}}]
                    ),
                    {"name": "score", "valueDecimal": score},
                ],
            }
            for match_id, candidate, score in result.possible_matches
        ),
        *(
            {"name": "ignoredIdentifier", "valueIdentifier": {"system": ignored.system, "value": ignored.value}}
            for ignored in result.ignored
        ),
    )


def epix_endpoints(persons: PersonIds) -> Mapping[str, Endpoint]:
    """Operation name -> endpoint."""

    def request_mpi(context: Context, params: Parameters) -> dict[str, Any]:
        identifiers = _identifiers(context, params)
        asserter = asserter_of(context.caller, params)
        demographics = _demographics(params)
        with context.engine.begin() as connection:
            result = link(connection, identifiers, asserter, demographics)
            site = context.caller.site
            person = (
                {"system": PERSON_SYSTEM, "value": persons.of(connection, site, [result.mpi])[result.mpi]}
                if site is not None
                else {"system": MPI_SYSTEM, "value": result.mpi}
            )
            subjects = [result.mpi, *(i.value for i in identifiers)]
            detail = f"source {asserter.source}" + (
                f"; {len(result.ignored)} identifiers not its own" if result.ignored else ""
            )
            audit_log.record(connection, context.success("$requestMPI", subjects, OPERATIONS, detail))
        return _result(result, person)

    def list_matches(context: Context, _params: Parameters) -> dict[str, Any]:
        with context.engine.begin() as connection:
            matches = open_matches(connection)
            audit_log.record(connection, context.success("$possibleMatches", [], OPERATIONS))
        return parameters(
            *(
                {
                    "name": "possibleMatch",
                    "part": [
                        {"name": "id", "valueString": str(m["id"])},
                        {"name": "mpi", "valueIdentifier": {"system": MPI_SYSTEM, "value": m["mpi"]}},
                        {"name": "candidate", "valueIdentifier": {"system": MPI_SYSTEM, "value": m["candidate_mpi"]}},
                        {"name": "score", "valueDecimal": m["score"]},
                    ],
                }
                for m in matches
            )
        )

    def resolve_match(context: Context, params: Parameters) -> dict[str, Any]:
        raw_id = params.string("id") or ""
        if not raw_id.isdigit():
            raise FhirError(400, "invalid", f"id {raw_id!r} must be the number of a possible match", ("id",))
        resolution = params.string("resolution") or ""
        with context.engine.begin() as connection:
            match = resolve(connection, int(raw_id), resolution, context.caller.name)
            subjects = [match["mpi"], match["candidate_mpi"]]
            audit_log.record(
                connection,
                context.success("$resolvePossibleMatch", subjects, OPERATIONS, f"{resolution} match {raw_id}"),
            )
        return parameters(
            {"name": "status", "valueCode": match["status"]},
            {"name": "mpi", "valueIdentifier": {"system": MPI_SYSTEM, "value": match["mpi"]}},
        )

    return {
        "$requestMPI": operation("$requestMPI", Role.LINKAGE, request_mpi),
        "$possibleMatches": operation("$possibleMatches", Role.LINKAGE_REVIEW, list_matches),
        "$resolvePossibleMatch": operation("$resolvePossibleMatch", Role.LINKAGE_REVIEW, resolve_match),
    }
