"""Identity linkage operations under `/ttp-fhir/fhir/epix/` (named after E-PIX's `$requestMPI`).

`$requestMPI`: identifiers (and optionally demographics) from a source -> the person's MPI and any
possible matches for review. `$possibleMatches` lists open ones; `$resolvePossibleMatch` links or
separates them (a reviewer's decision, audited).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from servicekit.fhir import FhirError
from trustcentre.auth import Role
from trustcentre.db import audit_log
from trustcentre.fhir import Parameters, parameters
from trustcentre.linkage import Identifier, LinkResult, link, open_matches, resolve
from trustcentre.matching import SEXES, Demographics
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


def _result(result: LinkResult) -> dict[str, Any]:
    return parameters(
        {"name": "mpi", "valueIdentifier": {"system": MPI_SYSTEM, "value": result.mpi}},
        {"name": "created", "valueBoolean": result.created},
        *(
            {
                "name": "possibleMatch",
                "part": [
                    {"name": "id", "valueString": str(match_id)},
                    {"name": "candidate", "valueIdentifier": {"system": MPI_SYSTEM, "value": candidate}},
                    {"name": "score", "valueDecimal": score},
                ],
            }
            for match_id, candidate, score in result.possible_matches
        ),
    )


def epix_endpoints() -> Mapping[str, Endpoint]:
    """Operation name -> endpoint."""

    def request_mpi(context: Context, params: Parameters) -> dict[str, Any]:
        identifiers = _identifiers(context, params)
        source = params.string("source") or ""
        demographics = _demographics(params)
        with context.engine.begin() as connection:
            result = link(connection, identifiers, source, demographics)
            subjects = [result.mpi, *(i.value for i in identifiers)]
            audit_log.record(
                connection,
                context.success("$requestMPI", subjects, f"source {source}"),
            )
        return _result(result)

    def list_matches(context: Context, _params: Parameters) -> dict[str, Any]:
        with context.engine.begin() as connection:
            matches = open_matches(connection)
            audit_log.record(connection, context.success("$possibleMatches", []))
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
                context.success("$resolvePossibleMatch", subjects, f"{resolution} match {raw_id}"),
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
