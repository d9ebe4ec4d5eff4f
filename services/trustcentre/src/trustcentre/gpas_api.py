"""The gPAS TTP-FHIR gateway operations, answered in gPAS's own Parameters shape.

In: `target` (domain), `original` 1..* or `pseudonym` 1..* as valueString. Out: one part per
input, named `pseudonym` (or `original` for `$dePseudonymize`), with sub-parts `original`,
`target` and `pseudonym` as Identifiers; an input that cannot be answered gets an `error` part
with an `error-code` instead, and the others are still answered.

A caller uses only the domains it is granted (a node: those of the projects it sends research data
for), and a node's originals are the person ids it was given (`trustcentre.persons`): the pseudonym
is made of the person behind one, so every node's extract of a person carries the same pseudonym,
while an original the node was never given (an MPI, a guessed id) finds nobody.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from servicekit.audit import AuditRecord
from servicekit.fhir import FhirError
from servicekit.purpose import OPERATIONS
from trustcentre.auth import Role
from trustcentre.db import audit_log
from trustcentre.fhir import Parameters, identifier, parameters
from trustcentre.persons import DOMAIN_PREFIX, PersonIds
from trustcentre.pseudonyms import PseudonymStore
from trustcentre.web import Context, Endpoint, check_batch, operation

ERROR_CODE_SYSTEM = "urn:hubnode:trustcentre:gpas-error"


def _pair(kind: str, original: str, domain: str, pseudonym: str) -> dict[str, Any]:
    return {
        "name": kind,
        "part": [
            {"name": "original", "valueIdentifier": identifier(original)},
            {"name": "target", "valueIdentifier": identifier(domain)},
            {"name": "pseudonym", "valueIdentifier": identifier(pseudonym)},
        ],
    }


def _error(given_as: str, value: str, domain: str, code: str, text: str) -> dict[str, Any]:
    return {
        "name": "error",
        "part": [
            {"name": given_as, "valueIdentifier": identifier(value)},
            {"name": "target", "valueIdentifier": identifier(domain)},
            {"name": "error-code", "valueCoding": {"system": ERROR_CODE_SYSTEM, "code": code, "display": text}},
        ],
    }


def _inputs(context: Context, params: Parameters, name: str) -> tuple[str, list[str]]:
    domain = params.string("target")
    assert domain is not None  # noqa: S101 -- required=True
    context.caller.require_domain(domain)
    values = params.strings(name, minimum=1)
    check_batch(context, len(values), f"{name} values")
    return domain, values


def _audit(context: Context, operation_name: str, subjects: list[str], domain: str) -> AuditRecord:
    return context.success(operation_name, subjects, context.domain_purpose(domain), f"domain {domain}")


def gpas_endpoints(store: PseudonymStore, persons: PersonIds) -> Mapping[str, Endpoint]:  # noqa: C901 -- one closure per operation
    """Operation name -> endpoint, including the gPAS 1.10.x names as aliases."""

    def persons_of(context: Context, connection: Connection, originals: list[str]) -> dict[str, str]:
        """Original as given -> what is pseudonymised: itself, or for a node the person behind its id."""
        site = context.caller.site
        if site is None:
            return {original: original for original in originals}
        return persons.resolve(connection, site, originals)

    def pseudonymize(context: Context, params: Parameters, *, create: bool, name: str) -> dict[str, Any]:
        domain, originals = _inputs(context, params, "original")
        with context.engine.begin() as connection:
            behind = persons_of(context, connection, originals)
            made = store.pseudonymize(connection, domain, list(dict.fromkeys(behind.values())), create=create)
            found = {given: made[person] for given, person in behind.items() if person in made}
            audit_log.record(connection, _audit(context, name, [*behind.values(), *found.values()], domain))
        return parameters(
            *(
                _pair("pseudonym", o, domain, found[o])
                if o in found
                else _error("original", o, domain, "unknown-original", "no pseudonym for this original")
                for o in originals
            )
        )

    def depseudonymize(context: Context, params: Parameters) -> dict[str, Any]:
        domain, values = _inputs(context, params, "pseudonym")
        with context.engine.begin() as connection:
            found = store.depseudonymize(connection, domain, values)
            audit_log.record(connection, _audit(context, "$dePseudonymize", [*found, *found.values()], domain))
        return parameters(
            *(
                _pair("original", found[p], domain, p)
                if p in found
                else _error("pseudonym", p, domain, "unknown-pseudonym", "no such pseudonym in this domain")
                for p in values
            )
        )

    def delete(context: Context, params: Parameters) -> dict[str, Any]:
        domain, originals = _inputs(context, params, "original")
        with context.engine.begin() as connection:
            deleted = store.delete(connection, domain, originals)
            audit_log.record(connection, _audit(context, "$deletePseudonyms", [*deleted, *deleted.values()], domain))
        return parameters(
            *(
                _pair("deleted", o, domain, deleted[o])
                if o in deleted
                else _error("original", o, domain, "unknown-original", "no pseudonym for this original")
                for o in originals
            )
        )

    def add_domain(context: Context, params: Parameters) -> dict[str, Any]:
        name = params.string("domain") or ""
        if name.startswith(DOMAIN_PREFIX):
            raise FhirError(
                400, "invalid", f"domain names starting {DOMAIN_PREFIX!r} are the trust centre's own", ("domain",)
            )
        settings: dict[str, Any] = {}
        for key in ("alphabet", "prefix"):
            if (value := params.string(key, required=False)) is not None:
                settings[key] = value
        if (length := params.string("length", required=False)) is not None:
            settings["length"] = int(length) if length.isdigit() else length
        settings["check_digit"] = params.boolean("checkDigit", default=True)
        with context.engine.begin() as connection:
            created = store.add_domain(connection, name, settings, params.string("description", required=False) or "")
            audit_log.record(connection, context.success("$addDomain", [], OPERATIONS, f"domain {name}"))
        return parameters({"name": "created", "valueBoolean": created}, {"name": "domain", "valueString": name})

    allow_create = operation(
        "$pseudonymizeAllowCreate",
        Role.PSEUDONYMIZE,
        lambda c, p: pseudonymize(c, p, create=True, name="$pseudonymizeAllowCreate"),
    )
    lookup = operation(
        "$pseudonymize", Role.PSEUDONYMIZE, lambda c, p: pseudonymize(c, p, create=False, name="$pseudonymize")
    )
    reveal = operation("$dePseudonymize", Role.DEPSEUDONYMIZE, depseudonymize)
    return {
        "$pseudonymizeAllowCreate": allow_create,
        "$pseudonymize-allow-create": allow_create,
        "$pseudonymize": lookup,
        "$dePseudonymize": reveal,
        "$de-pseudonymize": reveal,
        "$deletePseudonyms": operation("$deletePseudonyms", Role.MANAGE_DOMAINS, delete),
        "$addDomain": operation("$addDomain", Role.MANAGE_DOMAINS, add_domain),
    }
