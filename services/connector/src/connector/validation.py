"""Is this input fit to be stored? FHIR R4 structure (fhir.resources R4B) plus the MII rules.

Collects every problem of every entry before anything is written, so a source learns all that is
wrong with a bundle in one answer (`Bundle.entry[3].resource.code: ...`, or `line 4` for NDJSON), and
a bundle with any problem writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic
from fhir.resources.R4B import get_fhir_model_class

from connector import mii_rules
from connector.lru import Lru
from connector.transform import identifier_cardinality, source_id
from servicekit.fhir import FhirError

#: Where entry `i` is, for messages: `Bundle.entry[i].resource` or `line <n>` (NDJSON).
Locate = Callable[[int], str]
INGESTIBLE_METHODS = ("PUT", "POST")
BUNDLE_TYPES = ("transaction", "batch")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where (FHIRPath-like) and what."""

    expression: str
    message: str


class InvalidInput(Exception):  # noqa: N818 -- reads as the state it reports
    """Input with problems: answered 422 with an OperationOutcome issue per problem."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        """Keep every problem for the answer."""
        super().__init__(f"{len(problems)} problems, first: {problems[0].expression}: {problems[0].message}")
        self.problems = tuple(problems)

    def outcome(self) -> dict[str, Any]:
        """The OperationOutcome naming each problem."""
        return {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "invalid",
                    "diagnostics": f"{p.expression}: {p.message}",
                    "expression": [p.expression],
                }
                for p in self.problems
            ],
        }


def bundle_entries(bundle: Any, max_entries: int) -> list[dict[str, Any]]:  # noqa: ANN401 -- decoded JSON
    """The entries of a transaction or batch Bundle; a body that is no such Bundle is refused (400/413)."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError(400, "invalid", "expected a Bundle resource", ("Bundle",))
    if bundle.get("type") not in BUNDLE_TYPES:
        raise FhirError(
            400, "invalid", f"Bundle.type {bundle.get('type')!r}: one of {', '.join(BUNDLE_TYPES)}", ("Bundle.type",)
        )
    entries = bundle.get("entry", [])
    if not isinstance(entries, list) or not entries:
        raise FhirError(400, "required", "Bundle.entry must list at least one entry", ("Bundle.entry",))
    if len(entries) > max_entries:
        raise FhirError(413, "too-costly", f"{len(entries)} entries; at most {max_entries} in one request")
    return entries


def bundle_location(index: int) -> str:
    """Where entry `index` of a Bundle is."""
    return f"Bundle.entry[{index}].resource"


class KnownFit:
    """Digests of resources whose structure and MII rules were checked and found fit (LRU, bounded).

    Sources re-send whole records (a nightly export, a replay after a failure); checking a resource
    against its model costs more than HAPI takes to store it unchanged, and the answer depends on
    the resource alone. Only that check is skipped: everything that depends on the entry or the
    bundle around it (method, id, references, duplicates) is checked every time.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        """Remember up to `capacity` resources (16 bytes each, plus the dictionary's own)."""
        self._digests: Lru[bytes, bytes] = Lru(capacity)

    def __contains__(self, digest: object) -> bool:
        """Whether a resource of this digest was found fit before (it is now the most recently used)."""
        return isinstance(digest, bytes) and self._digests.get(digest) is not None

    def add(self, digest: bytes) -> None:
        """Remember a resource's digest as fit, forgetting the least recently used beyond capacity."""
        self._digests.put(digest, digest)


def resource_digest(resource: object) -> bytes:
    """The resource's content, canonically serialised, hashed (key order does not matter, values do)."""
    canonical = json.dumps(resource, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(canonical.encode(), digest_size=16).digest()


def validate(
    entries: Sequence[Any], locate: Locate = bundle_location, known_fit: KnownFit | None = None
) -> list[Problem]:
    """Every problem of every entry (empty: fit to be stored); resources in `known_fit` skip the model check."""
    problems: list[Problem] = []
    full_urls = {e["fullUrl"] for e in entries if isinstance(e, dict) and isinstance(e.get("fullUrl"), str)}
    seen: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(entries):
        found = _entry_problems(entry, full_urls, known_fit)
        key = _key(entry)
        if key is not None and key in seen:
            found.append(("", f"{key[0]}/{key[1]} appears twice (also {locate(seen[key])})"))
        if key is not None:
            seen.setdefault(key, index)
        problems.extend(Problem(join_path(locate(index), path), message) for path, message in found)
    return problems


def _key(entry: Any) -> tuple[str, str] | None:  # noqa: ANN401 -- decoded JSON
    """(type, source id) of an entry that has both, else None."""
    resource = entry.get("resource") if isinstance(entry, dict) else None
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return None
    identity = source_id(entry)
    return None if identity is None else (resource["resourceType"], identity)


def _entry_problems(entry: Any, full_urls: set[str], known_fit: KnownFit | None) -> list[tuple[str, str]]:  # noqa: ANN401
    if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
        return [("", "the entry must carry a resource")]
    resource = entry["resource"]
    method = entry.get("request", {}).get("method") if isinstance(entry.get("request"), dict) else None
    if method is not None and method not in INGESTIBLE_METHODS:
        return [("", f"request.method {method!r}: only {' and '.join(INGESTIBLE_METHODS)} entries are ingested")]
    kind = resource.get("resourceType")
    try:
        model = get_fhir_model_class(kind) if isinstance(kind, str) else None
    except (ValueError, KeyError):
        model = None
    if model is None:
        return [("resourceType", f"{kind!r} is not a FHIR R4 resource type")]
    problems = _content_problems(model, resource, known_fit)
    if identifier_cardinality(kind) == "none":
        problems.append(("", f"a {kind} has no identifier to be stored under; the connector keys every resource so"))
    if source_id(entry) is None:
        problems.append(("id", "is required (or a urn:uuid: fullUrl): the source's id keys the stored resource"))
    own = resource.get("identifier")
    if identifier_cardinality(kind) == "one" and isinstance(own, dict) and not (own.get("system") and own.get("value")):
        problems.append(("identifier", "needs a system and a value: it keys the stored resource"))
    problems.extend(_dangling(resource, full_urls))
    return problems


def _content_problems(model: Any, resource: dict[str, Any], known_fit: KnownFit | None) -> list[tuple[str, str]]:  # noqa: ANN401
    """The resource's structure and MII rules, unless `known_fit` holds it (a fit one joins it)."""
    if known_fit is None:
        return _model_problems(model, resource)
    digest = resource_digest(resource)
    if digest in known_fit:
        return []
    problems = _model_problems(model, resource)
    if not problems:
        known_fit.add(digest)
    return problems


def _model_problems(model: Any, resource: dict[str, Any]) -> list[tuple[str, str]]:  # noqa: ANN401 -- a model class
    """The structure, then (once it is sound) the MII rules, which read elements they can then rely on."""
    return _structure(model, resource) or mii_rules.problems(resource)


def _structure(model: Any, resource: dict[str, Any]) -> list[tuple[str, str]]:  # noqa: ANN401 -- a model class
    try:
        model.model_validate(resource)
    except pydantic.ValidationError as exc:
        return [(_path(error["loc"]), error["msg"]) for error in exc.errors()]
    except (ValueError, TypeError, RecursionError) as exc:  # fhir.resources raises plain errors for a few shapes
        return [("", f"is not a valid {resource.get('resourceType')}: {exc}")]
    return []


def _dangling(value: Any, full_urls: set[str], path: str = "") -> list[tuple[str, str]]:  # noqa: ANN401
    """`urn:` references that name no entry of the bundle (HAPI would refuse them at the end)."""
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _dangling(item, full_urls, f"{path}[{i}]")]
    if not isinstance(value, dict):
        return []
    found = [p for key, item in value.items() for p in _dangling(item, full_urls, join_path(path, key))]
    reference = value.get("reference")
    if isinstance(reference, str) and reference.startswith("urn:") and reference not in full_urls:
        found.append((join_path(path, "reference"), f"{reference} names no entry of this bundle"))
    return found


def _path(location: Sequence[int | str]) -> str:
    path = ""
    for step in location:
        path = f"{path}[{step}]" if isinstance(step, int) else join_path(path, str(step))
    return path


def join_path(prefix: str, path: str) -> str:
    """`path` inside what `prefix` names: `Bundle.entry[2].resource` + `code` -> `Bundle.entry[2].resource.code`."""
    return f"{prefix}.{path}" if prefix and path and not path.startswith("[") else f"{prefix}{path}"
