"""Does the input meet the profiles it declares? HAPI's `$validate` against the vendored MII profiles.

The fast structural check (`connector.validation`) runs first; what passes it and declares a profile in
`meta.profile` is sent here, a request's uncached resources in `Bundle/$validate` calls of up to
VALIDATE_BATCH each: collections whose entries each have a base of their own (`entry_url`), so no
reference resolves to another entry and each resource is judged on its own, as `Type/$validate` would
(the MII test data's findings are the same), at a fraction of the calls and time (3.4 s against 17 s
for its 726 resources). Batches are not made larger because HAPI's validator takes time that grows with
the square of a bundle's size (it matches every new message against those it holds, and each
reference against every entry): 1,000 generated resources a call were judged at 182 a second, 100 a
call at 406 (2026-12-06). Resources that declare no profile are not sent: they are held to FHIR R4's
structure only.

What the validator says is kept per resource content (an LRU keyed by its digest): sources re-send
whole records, and the answer depends on the resource alone. The node's policy decides which findings
refuse the input and which only travel back as warnings: `strict` refuses on errors, `warn` stores and
reports them, `off` asks nothing. Terminology has its own setting, because codes from systems that
cannot be checked offline (SNOMED CT, LOINC, ICD-10-GM in full) say nothing about the data's shape.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from connector.lru import Lru
from connector.validation import resource_digest

#: An issue's place in HAPI's answer: `Bundle.entry[3].resource/*Observation/x*/.code.coding[0]`.
_ENTRY_PLACE = re.compile(r"Bundle\.entry\[(\d+)\]\.resource(?:/\*[^*]*\*/)?(?:\.(?P<path>.*))?")
#: HAPI's issue extension naming the validator message behind an issue.
MESSAGE_ID_URL = "http://hl7.org/fhir/StructureDefinition/operationoutcome-message-id"
_TERMINOLOGY_MESSAGES = ("Terminology_", "TERMINOLOGY_", "TX_")
#: What the validator says about how the wrapper's entries relate ("Entry 65 matches the reference ... but
#: its fullUrl does not match"): true of the wrapper (each entry on a base of its own), not of the resource,
#: and it changes with whatever else was sent in the same call.
_WRAPPER_ARTEFACTS = frozenset({"BUNDLE_BUNDLE_POSSIBLE_MATCH_NO_FU", "BUNDLE_BUNDLE_POSSIBLE_MATCH_WRONG_FU"})
#: Resources judged in one `Bundle/$validate` call at most (see the module's docstring).
VALIDATE_BATCH = 100
#: Calls of one request in flight at once: HAPI judges each on a thread of its own.
VALIDATE_CONCURRENCY = 2


class Mode(StrEnum):
    """What a kind of finding does to the input."""

    STRICT = "strict"  # errors refuse the input
    WARN = "warn"  # errors are stored with the input and reported as warnings
    OFF = "off"  # nothing is asked (for profiles only: terminology is never passed unasked while profiles are checked)


@dataclass(frozen=True)
class Policy:
    """The node's validation modes: for the profiles' structure and cardinality, and for terminology."""

    profiles: Mode = Mode.STRICT
    terminology: Mode = Mode.WARN

    def for_peers(self) -> Policy:
        """What a peer's records are held to: reported, never refused, for their findings against the profiles.

        A peer sends what it already holds (a care summary, a research extract). Refusing it here would
        not mend it there, only keep a patient's record from the node treating them; records stored before
        a node validated (an upgrade) would never travel again. Where data enters the federation, from a
        source, the node's own policy decides.
        """
        return Policy(_reporting(self.profiles), _reporting(self.terminology))

    @property
    def may_refuse(self) -> bool:
        """Whether any finding can refuse the input (else it may be stored while it is judged)."""
        return Mode.STRICT in (self.profiles, self.terminology) and self.profiles is not Mode.OFF

    def refuses(self, finding: Finding) -> bool:
        """Whether `finding` refuses the input under this policy."""
        if finding.severity != "error":
            return False
        mode = self.terminology if finding.terminology else self.profiles
        return mode is Mode.STRICT


def _reporting(mode: Mode) -> Mode:
    return Mode.WARN if mode is Mode.STRICT else mode


@dataclass(frozen=True)
class Finding:
    """One thing the validator said about one resource: where in it, against which profiles, what."""

    severity: str  # "error" or "warning"
    path: str  # inside the resource, e.g. `code.coding[0]`; "" for the resource as a whole
    message: str
    terminology: bool
    profiles: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The message, naming the profiles the resource declared."""
        return f"{self.message} (declared profile {', '.join(self.profiles)})" if self.profiles else self.message


class Validator(Protocol):
    """Who answers `Bundle/$validate` (the node's HAPI)."""

    async def validate(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        """The OperationOutcome for a collection Bundle."""
        ...


#: A resource to ask about: itself, the profiles it declares, the indexes of the entries carrying it.
_Asked = tuple[Mapping[str, Any], tuple[str, ...], list[int]]


class ProfileCheck:
    """Findings per entry, asking the validator only about resources it has not judged before."""

    def __init__(self, validator: Validator, policy: Policy, capacity: int = 100_000) -> None:
        """Ask `validator` under `policy`; remember the findings of up to `capacity` resources."""
        self.validator = validator
        self.policy = policy
        self._known: Lru[bytes, tuple[Finding, ...]] = Lru(capacity)

    def policy_for(self, *, from_peer: bool) -> Policy:
        """The node's policy for what its sources send; `Policy.for_peers` for what a peer sends."""
        return self.policy.for_peers() if from_peer else self.policy

    async def findings(self, entries: Sequence[Mapping[str, Any]]) -> dict[int, tuple[Finding, ...]]:
        """Entry index -> what the validator said about its resource (entries without findings are left out)."""
        if self.policy.profiles is Mode.OFF:
            return {}
        found: dict[int, tuple[Finding, ...]] = {}
        asked: dict[bytes, _Asked] = {}
        for index, entry in enumerate(entries):
            resource = entry["resource"]
            profiles = declared_profiles(resource)
            if not profiles:
                continue
            digest = resource_digest(resource)
            known = self._known.get(digest)
            if known is not None:
                found[index] = known
            else:
                asked.setdefault(digest, (resource, profiles, []))[2].append(index)
        pending = list(asked.items())
        turns = asyncio.Semaphore(VALIDATE_CONCURRENCY)
        batches = [pending[start : start + VALIDATE_BATCH] for start in range(0, len(pending), VALIDATE_BATCH)]
        for batch in await asyncio.gather(*(self._judged(batch, turns) for batch in batches)):
            for indexes, said in batch:
                found.update(dict.fromkeys(indexes, said))
        return {index: said for index, said in sorted(found.items()) if said}

    async def _judged(
        self, batch: Sequence[tuple[bytes, _Asked]], turns: asyncio.Semaphore
    ) -> list[tuple[list[int], tuple[Finding, ...]]]:
        """The entry indexes of each resource of `batch` with what the validator said of it, asked in one call."""
        bundle = validation_bundle([resource for _, (resource, _, _) in batch])
        async with turns:
            answers = findings_of(await self.validator.validate(bundle), len(batch))
        judged = []
        for position, (digest, (_, profiles, indexes)) in enumerate(batch):
            said = tuple(_with_profiles(f, profiles) for f in answers.get(position, ()))
            self._known.put(digest, said)
            judged.append((indexes, said))
        return judged


def validation_bundle(resources: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The collection `Bundle/$validate` is asked about: each resource as an entry on a base of its own."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": entry_url(position, resource), "resource": resource}
            for position, resource in enumerate(resources)
        ],
    }


def entry_url(position: int, resource: Mapping[str, Any]) -> str:
    """A full URL on a base of the entry's own, where relative references find nothing (`.invalid` is reserved)."""
    kind, resource_id = resource.get("resourceType"), resource.get("id")
    if isinstance(resource_id, str) and resource_id:
        return f"https://entry-{position}.validation.invalid/fhir/{kind}/{resource_id}"
    return f"urn:uuid:{uuid.uuid4()}"


def declared_profiles(resource: Mapping[str, Any]) -> tuple[str, ...]:
    """The profiles a resource claims in `meta.profile` (strings only)."""
    meta = resource.get("meta")
    profiles = meta.get("profile") if isinstance(meta, dict) else None
    return tuple(p for p in profiles if isinstance(p, str)) if isinstance(profiles, list) else ()


def findings_of(outcome: Mapping[str, Any], entries: int) -> dict[int, list[Finding]]:
    """Entry position -> the errors and warnings HAPI's OperationOutcome places in that entry's resource.

    Issues about the wrapping Bundle itself, the wrapper's artefacts and informational ones are left out;
    `fatal` counts as an error.
    """
    found: dict[int, list[Finding]] = {}
    for issue in outcome.get("issue", []):
        if not isinstance(issue, dict) or issue.get("severity") not in ("fatal", "error", "warning"):
            continue
        places = [*issue.get("expression", []), *issue.get("location", [])]
        match = next((m for p in places if isinstance(p, str) and (m := _ENTRY_PLACE.fullmatch(p))), None)
        if match is None or int(match.group(1)) >= entries:
            continue
        message_ids = _message_ids(issue)
        if not _WRAPPER_ARTEFACTS.isdisjoint(message_ids):
            continue
        severity = "warning" if issue["severity"] == "warning" else "error"
        message = str(issue.get("diagnostics") or issue.get("details", {}).get("text") or issue.get("code"))
        finding = Finding(severity, match.group("path") or "", message, _is_terminology(issue, message_ids))
        found.setdefault(int(match.group(1)), []).append(finding)
    return found


def _is_terminology(issue: Mapping[str, Any], message_ids: list[str]) -> bool:
    """Whether an issue is about codes (a code not in a value set, a system not known) rather than shape."""
    return issue.get("code") == "code-invalid" or any(m.startswith(_TERMINOLOGY_MESSAGES) for m in message_ids)


def _message_ids(issue: Mapping[str, Any]) -> list[str]:
    """The validator messages behind an issue (HAPI names them in an extension)."""
    return [
        str(e.get("valueString") or e.get("valueCode") or "")
        for e in issue.get("extension", [])
        if isinstance(e, dict) and e.get("url") == MESSAGE_ID_URL
    ]


def _with_profiles(finding: Finding, profiles: tuple[str, ...]) -> Finding:
    return Finding(finding.severity, finding.path, finding.message, finding.terminology, profiles)
