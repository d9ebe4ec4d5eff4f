"""The gPAS operations of the MOSAIC TTP-FHIR gateway IG (`ttp-fhir-ig-gpas` 2025.x), in the IG's shapes.

- `$pseudonymizeAllowCreate`, `$pseudonymize`: `target`, `original` 1..*; one `pseudonym` per original
  (parts `target`, `original`, `pseudonym`) or an `error` (`original`, `error-code`).
- `$dePseudonymize`: `target`, `pseudonym` 1..*; one `original` (the same parts) or an `error`
  (`pseudonym`, `error-code`).
- `$pseudonymize-secondary`: `original` 1..*, each with parts `target`, `value`, `count`; `count`
  `secondarypseudonym` parts (`target`, `original`, `value`, `result-code`) per item, or an `error`
  (`target`, `error-code`) where the domain is unknown or keeps one pseudonym per original.
- `$insertValuePseudonymPairs`: `pseudonym` 1..*, each with parts `target`, `original`, `value`; one
  `successStatus` per item (`target`, `original`, `value`, `result-code`; an unknown domain: `target`,
  `result-code`).
- `$deletePseudonyms`, `$anonymizeOriginals`: `target`, `original` 1..*; one `successStatus` per
  original (`target`, `original`, `result-code`).

Every value is an Identifier of system `https://ths-greifswald.de/gpas`; a result is an operation-outcome
`MSG_*` code, a failed item a FHIR issue type (`not-found`, ...), as the IG's examples show, and the
other items are still done. A request as a whole is refused (4xx, nothing stored) for a missing or
malformed parameter, a batch past the limit, a caller not allowed, or an unknown domain given once for all.

A caller uses only the domains it is granted (a node: those of the projects it sends research data
for), and a node's originals are the person ids it was given (`trustcentre.persons`): the pseudonym
is made of the person behind one, so every node's extract of a person carries the same pseudonym,
while an original the node was never given (an MPI, a guessed id) finds nobody. Bringing pairs in,
deleting and anonymising are the site administrator's alone; the nodes' own domains (`persons.*`)
are the trust centre's and are changed by none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from servicekit.audit import AuditRecord
from servicekit.fhir import FhirError
from servicekit.purpose import OPERATIONS
from trustcentre.auth import Role
from trustcentre.db import audit_log
from trustcentre.fhir import Parameters, identifier, parameters
from trustcentre.persons import DOMAIN_PREFIX, PersonIds
from trustcentre.pseudonym_scheme import DomainSettings
from trustcentre.pseudonyms import ANONYMISED, Inserted, PseudonymStore
from trustcentre.secondary import add_secondary
from trustcentre.web import Context, Endpoint, check_batch, operation

ISSUE_TYPE = "http://hl7.org/fhir/issue-type"
OPERATION_OUTCOME = "http://terminology.hl7.org/CodeSystem/operation-outcome"
NOT_FOUND = {"system": ISSUE_TYPE, "code": "not-found", "display": "Not Found"}
NOT_SUPPORTED = {"system": ISSUE_TYPE, "code": "not-supported", "display": "Content not supported"}
CREATED = {"system": OPERATION_OUTCOME, "code": "MSG_CREATED"}
UPDATED = {"system": OPERATION_OUTCOME, "code": "MSG_UPDATED"}
DELETED = {"system": OPERATION_OUTCOME, "code": "MSG_DELETED"}
INSERTED = {
    Inserted.CREATED: CREATED,
    Inserted.EXISTS: {"system": ISSUE_TYPE, "code": "duplicate", "display": "Duplicate"},
    Inserted.INVALID: {"system": ISSUE_TYPE, "code": "value", "display": "Element value invalid"},
    Inserted.CONFLICT: {"system": ISSUE_TYPE, "code": "business-rule", "display": "Business Rule Violation"},
}

#: One item of `$pseudonymize-secondary` or `$insertValuePseudonymPairs`: domain, original, all its parts.
Item = tuple[str, str, Parameters]


def _value(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "valueIdentifier": identifier(value)}


def _code(name: str, coding: Mapping[str, str]) -> dict[str, Any]:
    return {"name": name, "valueCoding": dict(coding)}


def _named(name: str, *parts: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "part": list(parts)}


def _inputs(context: Context, params: Parameters, name: str) -> tuple[str, list[str]]:
    domain = params.string("target")
    assert domain is not None  # noqa: S101 -- required=True
    context.caller.require_domain(domain)
    values = params.strings(name, minimum=1)
    check_batch(context, len(values), f"{name} values")
    if name == "original":
        for (location, _), value in zip(params.named(name), values, strict=True):
            _not_anonymised(value, location)
    return domain, values


def _not_anonymised(original: str, where: str) -> None:
    """Refuse an original that is the anonymised marker: none may make or find one on purpose."""
    if original.startswith(ANONYMISED):
        raise FhirError(400, "invalid", f"{where}: originals starting {ANONYMISED!r} mark anonymised ones", (where,))


def _changeable(domain: str, where: str) -> None:
    """Refuse to change a node's person-id domain by hand: those pairs are the trust centre's own."""
    if domain.startswith(DOMAIN_PREFIX):
        raise FhirError(400, "invalid", f"domains starting {DOMAIN_PREFIX!r} are the trust centre's own", (where,))


def _site_administrator(context: Context) -> None:
    """Refuse a caller acting for a node: changing pairs wholesale is the site's own business."""
    if context.caller.site is not None:
        raise FhirError(
            403, "forbidden", f"caller {context.caller.name!r} acts for a node; only the site administrator may"
        )


def _items(context: Context, params: Parameters, name: str, original_part: str) -> list[Item]:
    """The items of parameter `name`: their `target` and original (part `original_part`), checked."""
    items: list[Item] = []
    entries = params.each(name)
    check_batch(context, len(entries), f"{name} items")
    for location, parts in entries:
        domain, original = parts.string("target"), parts.string(original_part)
        assert domain is not None  # noqa: S101 -- required=True
        assert original is not None  # noqa: S101 -- required=True
        context.caller.require_domain(domain, f"{location}.part")
        _changeable(domain, f"{location}.part")
        _not_anonymised(original, f"{location}.part")
        items.append((domain, original, parts))
    return items


def _audit(context: Context, operation_name: str, subjects: list[str], domain: str) -> AuditRecord:
    return context.success(operation_name, subjects, context.domain_purpose(domain), f"domain {domain}")


@dataclass(frozen=True)
class _Change:
    """`$deletePseudonyms` or `$anonymizeOriginals`: what is done to an original's pairs, and how it is told."""

    name: str
    work: Callable[[Connection, str, list[str]], dict[str, list[str]]]
    done: Mapping[str, str]
    #: Whether the originals are being forgotten (then not even the audit trail names them again).
    forget: bool


class _Gpas:
    """The operations over one pseudonym store; each method is one operation's work (see `trustcentre.web`)."""

    def __init__(self, store: PseudonymStore, persons: PersonIds) -> None:
        self._store = store
        self._persons = persons

    def endpoints(self) -> Mapping[str, Endpoint]:
        """Each operation under the IG's name, and under the other names callers know it by."""
        store = self._store
        allow_create = operation(
            "$pseudonymizeAllowCreate",
            Role.PSEUDONYMIZE,
            lambda c, p: self.pseudonymize(c, p, create=True, name="$pseudonymizeAllowCreate"),
        )
        lookup = operation(
            "$pseudonymize", Role.PSEUDONYMIZE, lambda c, p: self.pseudonymize(c, p, create=False, name="$pseudonymize")
        )
        reveal = operation("$dePseudonymize", Role.DEPSEUDONYMIZE, self.depseudonymize)
        secondary = operation("$pseudonymize-secondary", Role.PSEUDONYMIZE, self.secondary)
        anonymize = _Change("$anonymizeOriginals", store.anonymize, UPDATED, forget=True)
        delete = _Change("$deletePseudonyms", store.delete, DELETED, forget=False)
        return {
            "$pseudonymizeAllowCreate": allow_create,
            "$pseudonymize-allow-create": allow_create,
            "$pseudonymize": lookup,
            "$pseudonymize-secondary": secondary,
            "$pseudonymizeSecondary": secondary,
            "$insertValuePseudonymPairs": operation("$insertValuePseudonymPairs", Role.MANAGE_DOMAINS, self.insert),
            "$dePseudonymize": reveal,
            "$de-pseudonymize": reveal,
            "$anonymizeOriginals": operation(
                anonymize.name, Role.MANAGE_DOMAINS, lambda c, p: self.change(c, p, anonymize)
            ),
            "$deletePseudonyms": operation(delete.name, Role.MANAGE_DOMAINS, lambda c, p: self.change(c, p, delete)),
            "$addDomain": operation("$addDomain", Role.MANAGE_DOMAINS, self.add_domain),
        }

    def _persons_of(self, context: Context, connection: Connection, originals: list[str]) -> dict[str, str]:
        """Original as given -> what is pseudonymised: itself, or for a node the person behind its id."""
        site = context.caller.site
        if site is None:
            return {original: original for original in originals}
        return self._persons.resolve(connection, site, originals)

    def pseudonymize(self, context: Context, params: Parameters, *, create: bool, name: str) -> dict[str, Any]:
        domain, originals = _inputs(context, params, "original")
        with context.engine.begin() as connection:
            behind = self._persons_of(context, connection, originals)
            made = self._store.pseudonymize(connection, domain, list(dict.fromkeys(behind.values())), create=create)
            found = {given: made[person] for given, person in behind.items() if person in made}
            audit_log.record(connection, _audit(context, name, [*behind.values(), *found.values()], domain))
        return parameters(
            *(
                _named("pseudonym", _value("target", domain), _value("original", o), _value("pseudonym", found[o]))
                if o in found
                else _named("error", _value("original", o), _code("error-code", NOT_FOUND))
                for o in originals
            )
        )

    def depseudonymize(self, context: Context, params: Parameters) -> dict[str, Any]:
        domain, values = _inputs(context, params, "pseudonym")
        with context.engine.begin() as connection:
            found = self._store.depseudonymize(connection, domain, values)
            audit_log.record(connection, _audit(context, "$dePseudonymize", [*found, *found.values()], domain))
        return parameters(
            *(
                _named("original", _value("target", domain), _value("original", found[p]), _value("pseudonym", p))
                if p in found
                else _named("error", _value("pseudonym", p), _code("error-code", NOT_FOUND))
                for p in values
            )
        )

    def change(self, context: Context, params: Parameters, how: _Change) -> dict[str, Any]:
        """`$deletePseudonyms` and `$anonymizeOriginals`: one `successStatus` per original."""
        _site_administrator(context)
        domain, originals = _inputs(context, params, "original")
        _changeable(domain, "target")
        with context.engine.begin() as connection:
            changed = how.work(connection, domain, originals)
            pseudonyms = [p for values in changed.values() for p in values]
            # An original being forgotten (anonymised) is not written down again, not even in the audit trail.
            subjects = pseudonyms if how.forget else [*changed, *pseudonyms]
            audit_log.record(connection, _audit(context, how.name, subjects, domain))
        return parameters(
            *(
                _named(
                    "successStatus",
                    _value("target", domain),
                    _value("original", o),
                    _code("result-code", how.done if o in changed else NOT_FOUND),
                )
                for o in originals
            )
        )

    def secondary(self, context: Context, params: Parameters) -> dict[str, Any]:
        items = _items(context, params, "original", "value")
        counts = [parts.integer("count", at_least=1) for _, _, parts in items]
        check_batch(context, sum(counts), "secondary pseudonyms")
        answers: dict[int, list[dict[str, Any]]] = {}
        with context.engine.begin() as connection:
            behind = self._persons_of(context, connection, [original for _, original, _ in items])
            for domain in dict.fromkeys(domain for domain, _, _ in items):
                settings = self._store.find_settings(connection, domain)
                fault = _secondary_fault(settings)
                wanted = []
                for index, (of_item, original, _) in enumerate(items):
                    if of_item != domain:
                        continue
                    if fault or original not in behind:
                        answers[index] = [
                            _named("error", _value("target", domain), _code("error-code", fault or NOT_FOUND))
                        ]
                    else:
                        wanted.append(index)
                if settings is None or not wanted:
                    continue
                made = add_secondary(connection, domain, settings, [(behind[items[i][1]], counts[i]) for i in wanted])
                for index, values in zip(wanted, made, strict=True):
                    answers[index] = [_secondary(domain, items[index][1], value) for value in values]
                subjects = [behind[items[i][1]] for i in wanted] + [value for values in made for value in values]
                audit_log.record(connection, _audit(context, "$pseudonymize-secondary", subjects, domain))
        return parameters(*(part for index in range(len(items)) for part in answers[index]))

    def insert(self, context: Context, params: Parameters) -> dict[str, Any]:
        _site_administrator(context)
        items = _items(context, params, "pseudonym", "original")
        values = [parts.string("value") or "" for _, _, parts in items]
        answers: dict[int, dict[str, Any]] = {}
        with context.engine.begin() as connection:
            for domain in dict.fromkeys(domain for domain, _, _ in items):
                mine = [index for index, item in enumerate(items) if item[0] == domain]
                if self._store.find_settings(connection, domain) is None:
                    answers.update(
                        (i, _named("successStatus", _value("target", domain), _code("result-code", NOT_FOUND)))
                        for i in mine
                    )
                    continue
                outcomes = self._store.insert_pairs(connection, domain, [(items[i][1], values[i]) for i in mine])
                for index, outcome in zip(mine, outcomes, strict=True):
                    answers[index] = _named(
                        "successStatus",
                        _value("target", domain),
                        _value("original", items[index][1]),
                        _value("value", values[index]),
                        _code("result-code", INSERTED[outcome]),
                    )
                created = [i for i, outcome in zip(mine, outcomes, strict=True) if outcome is Inserted.CREATED]
                subjects = [items[i][1] for i in created] + [values[i] for i in created]
                audit_log.record(connection, _audit(context, "$insertValuePseudonymPairs", subjects, domain))
        return parameters(*(answers[index] for index in range(len(items))))

    def add_domain(self, context: Context, params: Parameters) -> dict[str, Any]:
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
        settings["multiple_pseudonyms"] = params.boolean("multiplePseudonyms", default=False)
        with context.engine.begin() as connection:
            created = self._store.add_domain(
                connection, name, settings, params.string("description", required=False) or ""
            )
            audit_log.record(connection, context.success("$addDomain", [], OPERATIONS, f"domain {name}"))
        return parameters({"name": "created", "valueBoolean": created}, {"name": "domain", "valueString": name})


def gpas_endpoints(store: PseudonymStore, persons: PersonIds) -> Mapping[str, Endpoint]:
    """Operation name -> endpoint, including the gPAS 1.10.x names and our earlier ones as aliases."""
    return _Gpas(store, persons).endpoints()


def _secondary_fault(settings: DomainSettings | None) -> Mapping[str, str] | None:
    """Why a domain gives no secondary pseudonyms (unknown, or one pseudonym per original), or None."""
    if settings is None:
        return NOT_FOUND
    return None if settings.multiple_pseudonyms else NOT_SUPPORTED


def _secondary(domain: str, original: str, value: str) -> dict[str, Any]:
    return _named(
        "secondarypseudonym",
        _value("target", domain),
        _value("original", original),
        _value("value", value),
        _code("result-code", CREATED),
    )
