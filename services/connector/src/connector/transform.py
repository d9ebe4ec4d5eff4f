"""Turning what a source sends into one HAPI transaction (pure: no I/O, same input -> same output).

Every resource is keyed by its source identifier `<source system>/<site>|<Type>/<source id>` and
written at an id derived from it (or, where the node writes by identifier, as a conditional update
on it: `connector.resource_ids`), so a replay finds and updates what the first run created instead of
creating it again. Entries get `urn:uuid:` full URLs derived (uuid5) from that key, and
references between entries are rewritten to them; a `Type/id` reference to a resource outside the
bundle becomes a conditional reference on that resource's source identifier (sent earlier by the
same source). A resource that already carries an origin identifier (one a connector of the
federation gave it, under the origin base) keeps that key where the receiver honours it (`Origins`):
a journey sent back to the node it came from then updates the originals instead of storing twins.
An origin the receiver does not honour (a peer naming a record that is not its own) is dropped, and the
resource is keyed under its sender, so no peer can overwrite another node's records. Also here: NDJSON
lines -> a Bundle.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

from fhir.resources.R4B import get_fhir_model_class

#: Identifier system of the id this node knows a person by (given by the trust centre; never the MPI).
PERSON_SYSTEM = "urn:hubnode:person"
#: Namespace of the entries' uuid5 full URLs (fixed: replays must give identical transactions).
NAMESPACE = uuid.UUID("6f1d3f0a-3c55-5b8e-9a57-2f4f7d1c0b61")
_RELATIVE_REFERENCE = re.compile(r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?")
_TOKEN_SPECIALS = str.maketrans({"\\": "\\\\", ",": "\\,", "$": "\\$", "|": "\\|"})


@dataclass(frozen=True)
class SourceKey:
    """How one resource is found again: its type and the identifier it is written under.

    A key written `by_id` is PUT at an id derived from it, which finds the resource again without a
    search: every key on a node that writes at derived ids, and on any node the types the store cannot
    search by `identifier` (R4 defines no such search for AdverseEvent, for one) and a person's Patient,
    keyed by the node's person id, which every ingest reads back. The others are written by a
    conditional update on the identifier.
    """

    resource_type: str
    system: str
    value: str
    by_id: bool = False

    @property
    def name(self) -> uuid.UUID:
        """The key as a uuid5: the same on every replay."""
        return uuid.uuid5(NAMESPACE, f"{self.system}|{self.value}")

    @property
    def full_url(self) -> str:
        """The entry's `urn:uuid:` placeholder, the same on every replay."""
        return f"urn:uuid:{self.name}"

    @property
    def stable_id(self) -> str:
        """The id the key gives a resource written `by_id` (letters first: never all digits)."""
        return f"hn-{self.name.hex}"

    @property
    def request_url(self) -> str:
        """Where the entry is PUT and how others refer to it: `<Type>/<stable id>`, else the conditional URL."""
        return f"{self.resource_type}/{self.stable_id}" if self.by_id else self.conditional_url

    @property
    def conditional_url(self) -> str:
        """`<Type>?identifier=<system>|<value>`, escaped for a FHIR token search."""
        system = quote(self.system.translate(_TOKEN_SPECIALS), safe=":/")
        value = quote(self.value.translate(_TOKEN_SPECIALS), safe=":/")
        return f"{self.resource_type}?identifier={system}|{value}"


def source_system(base: str, site: str) -> str:
    """The identifier system of the resources `site` sends (`<CN_SOURCE_SYSTEM>/<site>`)."""
    return f"{base}/{site}"


def source_id(entry: Mapping[str, Any]) -> str | None:
    """The id a source gave a resource: `resource.id`, else the uuid of a `urn:uuid:` full URL."""
    resource = entry.get("resource", {})
    if isinstance(resource.get("id"), str):
        return str(resource["id"])
    full_url = entry.get("fullUrl")
    if isinstance(full_url, str) and full_url.startswith("urn:uuid:"):
        return full_url.removeprefix("urn:uuid:")
    return None


@functools.cache
def identifier_cardinality(resource_type: str) -> str:
    """`many`, `one` or `none`: how many identifiers a resource of this type can carry (FHIR R4)."""
    field = get_fhir_model_class(resource_type).model_fields.get("identifier")
    if field is None:
        return "none"
    return "many" if "list" in str(field.annotation).lower() else "one"


@dataclass(frozen=True)
class Origins:
    """Which origin identifiers a sender's resources may keep as their key.

    `base` is the federation's source system base: identifiers under it name where a resource was
    first ingested. `honoured(system, value)` says whether a carried origin may key the resource here.
    """

    base: str
    honoured: Callable[[str, str], bool]


def source_key(entry: Mapping[str, Any], system: str, origins: Origins | None = None) -> SourceKey:
    """The key of a validated entry: a linked Patient's person id, else its first honoured origin, else its source id.

    Types with room for one identifier only are keyed by the one they have. Without `origins` no
    origin a sender claims is honoured (as for research extracts).

    A person has one Patient per node whoever sent them (their own site, a careSummary from another):
    the trust centre gives every record of the person the same person id at this node, so that id is the key.
    """
    resource = entry["resource"]
    kind = resource["resourceType"]
    own = resource.get("identifier")
    if identifier_cardinality(kind) == "one" and isinstance(own, dict):
        return SourceKey(kind, str(own["system"]), str(own["value"]))
    if kind == "Patient":
        person = next(
            (i.get("value") for i in own or [] if isinstance(i, dict) and i.get("system") == PERSON_SYSTEM), None
        )
        if isinstance(person, str):
            return person_key(person)
    carried = first_origin(resource, origins.base) if origins else None
    if carried is not None and origins is not None and origins.honoured(carried.system, carried.value):
        return carried
    return origin_key(entry, system)


def person_key(person: str) -> SourceKey:
    """The key of a person's one Patient at a node: the node's id of them, written at an id derived from it."""
    return SourceKey("Patient", PERSON_SYSTEM, person, by_id=True)


def first_origin(resource: Mapping[str, Any], origin_base: str) -> SourceKey | None:
    """The first `<origin_base>/<site>|<Type>/<id>` identifier of `resource`: the key its first node gave it."""
    kind = resource["resourceType"]
    for identifier in resource.get("identifier") or []:
        pair = (identifier.get("system"), identifier.get("value")) if isinstance(identifier, dict) else None
        match pair:
            case (str(system), str(value)) if system.startswith(f"{origin_base}/") and value.startswith(f"{kind}/"):
                return SourceKey(kind, system, value)
    return None


def origin_key(entry: Mapping[str, Any], system: str) -> SourceKey:
    """The identifier the source's own id becomes: `<system>|<Type>/<source id>`."""
    kind = entry["resource"]["resourceType"]
    return SourceKey(kind, system, f"{kind}/{source_id(entry)}")


def to_transaction(
    entries: Sequence[Mapping[str, Any]],
    system: str,
    origins: Origins | None = None,
    searchable: Collection[str] | None = None,
    *,
    derived_ids: bool = False,
) -> dict[str, Any]:
    """The HAPI transaction for validated `entries` sent by the source of identifier `system`.

    `searchable`: the types the store can search by identifier (None: every type); `derived_ids`:
    whether the node writes every resource at the id its key gives it.
    """
    keying = Keying(system, searchable, origins, derived_ids=derived_ids)
    keys = [keying.key(source_key(entry, system, origins)) for entry in entries]
    placeholders: dict[str, str] = {}
    for entry, key in zip(entries, keys, strict=True):
        placeholders[f"{key.resource_type}/{source_id(entry)}"] = key.full_url
        if isinstance(entry.get("fullUrl"), str):
            placeholders[entry["fullUrl"]] = key.full_url
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": key.full_url,
                "resource": _prepared(entry, key, keying, placeholders),
                "request": {"method": "PUT", "url": key.request_url},
            }
            for entry, key in zip(entries, keys, strict=True)
        ],
    }


@dataclass(frozen=True)
class Keying:
    """The sender's identifier system, the types the store can search by identifier (None: all), origins honoured.

    `derived_ids`: whether every resource is written at the id its key gives it (else by identifier).
    """

    system: str
    searchable: Collection[str] | None
    origins: Origins | None = None
    derived_ids: bool = False

    def foreign(self, identifier: Any) -> bool:  # noqa: ANN401 -- an element of untrusted JSON
        """Whether `identifier` is an origin of another node that this receiver does not honour."""
        origins = self.origins
        if origins is None or not isinstance(identifier, dict):
            return False
        system, value = identifier.get("system"), identifier.get("value")
        if not isinstance(system, str) or not system.startswith(f"{origins.base}/") or system == self.system:
            return False
        return not (isinstance(value, str) and origins.honoured(system, value))

    def key(self, key: SourceKey) -> SourceKey:
        """`key` as its resource is written: by id on a node of derived ids, else as `found`."""
        return replace(key, by_id=True) if self.derived_ids else self.found(key)

    def found(self, key: SourceKey) -> SourceKey:
        """`key` as a reference from outside its bundle finds it: by identifier where the store can search its type.

        Not by the id the key gives: the resource referred to may have been written under another key
        (a Patient under its person, a record under the origin it carried) or, on a node writing by
        identifier, at an id HAPI gave it; it carries this identifier either way.
        """
        if self.searchable is None or key.resource_type in self.searchable:
            return key
        return replace(key, by_id=True)


def _prepared(
    entry: Mapping[str, Any], key: SourceKey, keying: Keying, placeholders: Mapping[str, str]
) -> dict[str, Any]:
    prepared: dict[str, Any] = _rewritten(copy.deepcopy(dict(entry["resource"])), keying, placeholders)
    prepared.pop("id", None)
    meta = prepared.get("meta")
    if isinstance(meta, dict):
        meta.pop("versionId", None)
        meta.pop("lastUpdated", None)
    if identifier_cardinality(key.resource_type) == "one":
        prepared["identifier"] = prepared.get("identifier") or {"system": key.system, "value": key.value}
        return prepared
    origin = origin_key(entry, keying.system)
    own = {"system": origin.system, "value": origin.value}  # references from the same source find it by this
    kept = [i for i in prepared.get("identifier", []) if not keying.foreign(i)]
    if own not in [{"system": i.get("system"), "value": i.get("value")} for i in kept]:
        kept = [*kept, own]
    prepared["identifier"] = kept
    return prepared


def _rewritten(value: Any, keying: Keying, placeholders: Mapping[str, str]) -> Any:  # noqa: ANN401 -- any JSON
    if isinstance(value, list):
        return [_rewritten(item, keying, placeholders) for item in value]
    if not isinstance(value, dict):
        return value
    rewritten = {k: _rewritten(v, keying, placeholders) for k, v in value.items()}
    if isinstance(value.get("reference"), str):
        rewritten["reference"] = _reference(value["reference"], keying, placeholders)
    return rewritten


def _reference(reference: str, keying: Keying, placeholders: Mapping[str, str]) -> str:
    unversioned = reference.split("/_history/", 1)[0]
    if unversioned in placeholders:
        return placeholders[unversioned]
    relative = _RELATIVE_REFERENCE.fullmatch(reference)
    if relative:
        kind, target = relative.group(1), relative.group(2)
        return keying.found(SourceKey(kind, keying.system, f"{kind}/{target}")).request_url
    return reference


def relative_references(value: Any) -> set[str]:  # noqa: ANN401 -- any JSON value
    """Every `Type/id` a resource references (versions dropped); absolute and `urn:` references are not."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= relative_references(item)
    elif isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str):
            relative = _RELATIVE_REFERENCE.fullmatch(reference)
            if relative:
                found.add(f"{relative.group(1)}/{relative.group(2)}")
        for item in value.values():
            found |= relative_references(item)
    return found


@dataclass(frozen=True)
class NdjsonProblem:
    """A line of an NDJSON body that is not one FHIR resource."""

    line: int
    message: str


#: Bundles whose entries an NDJSON line contributes (MII test data ships one transaction bundle per line);
#: a Bundle of another type (a document, say) is a resource like any other.
ENTRY_BUNDLE_TYPES = ("transaction", "batch", "collection")


def bundle_from_ndjson(body: bytes) -> tuple[dict[str, Any], list[str], list[NdjsonProblem]]:
    """A transaction Bundle of an NDJSON body's resources, where each entry came from, and every bad line.

    A line is one resource, or a Bundle of an ENTRY_BUNDLE_TYPES type whose entries all join the
    transaction; an entry's place is `line <n>`, or `line <n> Bundle.entry[<i>].resource` inside a bundle line.
    An entry equal to one before it is taken once: bundles of one patient each repeat the organisations,
    practitioners and devices they share (a differing twin stays, and validation refuses the pair).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _empty_bundle(), [], [NdjsonProblem(text_line(body, exc.start), "is not UTF-8")]
    taken = _Entries()
    problems: list[NdjsonProblem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            resource = json.loads(line)
        except ValueError as exc:
            problems.append(NdjsonProblem(number, f"is not valid JSON ({exc})"))
            continue
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            problems.append(NdjsonProblem(number, "is not a FHIR resource (a JSON object with a resourceType)"))
        elif resource["resourceType"] != "Bundle" or resource.get("type") not in ENTRY_BUNDLE_TYPES:
            taken.add({"resource": resource}, f"line {number}")
        elif not isinstance(resource.get("entry"), list) or not resource["entry"]:
            problems.append(NdjsonProblem(number, f"is a {resource['type']} Bundle without entries: nothing to import"))
        else:
            for index, entry in enumerate(resource["entry"]):
                taken.add(entry, f"line {number} Bundle.entry[{index}].resource")
    return {**_empty_bundle(), "entry": taken.entries}, taken.places, problems


class _Entries:
    """Entries with their places, each distinct one once (by type and source id, then by content)."""

    def __init__(self) -> None:
        self.entries: list[Any] = []
        self.places: list[str] = []
        self._first: dict[tuple[str, str], Any] = {}

    def add(self, entry: Any, place: str) -> None:  # noqa: ANN401 -- an entry of untrusted JSON
        resource = entry.get("resource") if isinstance(entry, dict) else None
        identity = source_id(entry) if isinstance(resource, dict) else None
        key = (str(resource.get("resourceType")), identity) if isinstance(resource, dict) and identity else None
        if key is not None and self._first.get(key) == entry:
            return
        if key is not None:
            self._first.setdefault(key, entry)
        self.entries.append(entry)
        self.places.append(place)


def text_line(body: bytes, offset: int) -> int:
    """The 1-based line number of byte `offset` in `body`."""
    return body.count(b"\n", 0, offset) + 1


def _empty_bundle() -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": []}
