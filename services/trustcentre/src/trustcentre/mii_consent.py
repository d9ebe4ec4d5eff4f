"""MII consent resources in, plain policy data out.

Consents reach the trust centre from outside (gICS-style `$addConsent`, scenario fixtures), so a
resource is checked against the MII consent module's rules before anything is decided on it, and
every problem is reported at once with its FHIR path: a sender fixes a resource in one round trip.

Periods become `datetime.date`s. A partial date covers its whole span (start "2024" is 2024-01-01,
end "2024" is 2024-12-31); a dateTime counts by the calendar day written in it, ignoring the time.
A period end is inclusive: a policy permitted until 2054-01-31 still holds on that day.
"""

import re
from calendar import monthrange
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from types import MappingProxyType
from typing import Final, NamedTuple

MII_CONSENT_PROFILE: Final = (
    "https://www.medizininformatik-initiative.de/fhir/modul-consent/StructureDefinition/mii-pr-consent-einwilligung"
)
POLICY_SYSTEM: Final = "urn:oid:2.16.840.1.113883.3.1937.777.24.5.3"
BROAD_CONSENT_POLICY_URI: Final = "urn:oid:2.16.840.1.113883.3.1937.777.24.2.1791"
CONSENT_SCOPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/consentscope"
LOINC_SYSTEM: Final = "http://loinc.org"
RESEARCH_CONSENT_LOINC: Final = "57016-8"
MII_CATEGORY_SYSTEM: Final = (
    "https://www.medizininformatik-initiative.de/fhir/modul-consent/CodeSystem/mii-cs-consent-version-modules"
)
MII_CATEGORY_CODE: Final = "2.16.840.1.113883.3.1937.777.24.2.184"
CONSENT_STATES: Final = ("draft", "proposed", "active", "rejected", "inactive", "entered-in-error")


class PolicyDisplay(NamedTuple):
    """How a policy reads to patients (German, as in the MII code system) and to developers."""

    german: str
    english: str


_OID: Final = POLICY_SYSTEM.removeprefix("urn:oid:")
MII_POLICY_CODES: Final[Mapping[str, PolicyDisplay]] = MappingProxyType(
    {
        f"{_OID}.2": PolicyDisplay("IDAT erheben", "collect identifying data"),
        f"{_OID}.3": PolicyDisplay("IDAT speichern, verarbeiten", "store and process identifying data"),
        f"{_OID}.4": PolicyDisplay("IDAT zusammenfuehren Dritte", "link identifying data with third parties"),
        f"{_OID}.5": PolicyDisplay("IDAT bereitstellen", "provide identifying data"),
        f"{_OID}.6": PolicyDisplay("MDAT erheben", "collect medical data"),
        f"{_OID}.7": PolicyDisplay("MDAT speichern, verarbeiten", "store and process medical data"),
        f"{_OID}.8": PolicyDisplay("MDAT wissenschaftlich nutzen", "use medical data for research"),
        f"{_OID}.9": PolicyDisplay("MDAT zusammenfuehren Dritte", "link medical data with third parties"),
        f"{_OID}.19": PolicyDisplay("BIOMAT erheben", "collect biomaterial"),
        f"{_OID}.20": PolicyDisplay("BIOMAT lagern, verarbeiten", "store and process biomaterial"),
        f"{_OID}.21": PolicyDisplay("BIOMAT Eigentum uebertragen", "transfer ownership of biomaterial"),
        f"{_OID}.22": PolicyDisplay("BIOMAT wissenschaftlich nutzen EU DSGVO Niveau", "use biomaterial for research"),
        f"{_OID}.23": PolicyDisplay("BIOMAT Analysedaten zusammenfuehren Dritte", "link biomaterial analysis data"),
        f"{_OID}.25": PolicyDisplay("BIOMAT Zusatzmengen entnehmen", "take additional biomaterial"),
        f"{_OID}.37": PolicyDisplay(
            "Rekontaktierung Ergebnisse erheblicher Bedeutung", "recontact about findings of major significance"
        ),
    }
)


class ConsentInvalid(ValueError):  # noqa: N818 - the name is the trust centre's API
    """A resource broke MII consent rules; `problems` names each one with its FHIR path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("not a valid MII consent: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class PolicyProvision:
    """One policy permitted or denied from `start` to `end` (inclusive; None: open-ended)."""

    code: str
    permit: bool
    start: date
    end: date | None


@dataclass(frozen=True)
class MiiConsent:
    """What policy decisions need from one consent; `date_time` is always timezone-aware."""

    patient_reference: str | None
    patient_identifiers: tuple[tuple[str, str], ...]
    date_time: datetime
    status: str
    provisions: tuple[PolicyProvision, ...]


_DATE: Final = re.compile(r"(?P<year>[0-9]{4})(?:-(?P<month>[0-9]{2})(?:-(?P<day>[0-9]{2}))?)?")
_DATE_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)


def _start_and_last_day(text: str) -> tuple[datetime, date] | None:
    """When a FHIR date or dateTime begins (a bare date at midnight UTC) and the last day it covers."""
    if _DATE_TIME.fullmatch(text):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        return moment, moment.date()
    found = _DATE.fullmatch(text)
    if found is None:
        return None
    year, month = int(found["year"]), int(found["month"] or 1)
    try:
        first = date(year, month, int(found["day"] or 1))
    except ValueError:
        return None
    if found["day"] is not None:
        last = first
    else:
        last = date(year, month, monthrange(year, month)[1]) if found["month"] is not None else date(year, 12, 31)
    return datetime.combine(first, time(), tzinfo=UTC), last


_JSON_TYPES: Final = (
    (bool, "a boolean"),
    (dict, "an object"),
    (list, "an array"),
    (str, "a string"),
    ((int, float), "a number"),
)


def _json_type(value: object) -> str:
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), "null" if value is None else "other")


class _Checker:
    """Collects problems while reading untyped JSON, so one pass reports everything."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def json_object(self, value: object, path: str) -> dict[str, object] | None:
        if isinstance(value, dict):
            return value
        self._wrong(value, path, "an object")
        return None

    def json_array(self, value: object, path: str) -> list[object] | None:
        if isinstance(value, list):
            return value
        self._wrong(value, path, "an array")
        return None

    def json_string(self, value: object, path: str) -> str | None:
        if isinstance(value, str):
            return value
        self._wrong(value, path, "a string")
        return None

    def _wrong(self, value: object, path: str, expected: str) -> None:
        self.problems.append(
            f"{path}: missing" if value is None else f"{path}: expected {expected}, got {_json_type(value)}"
        )

    def fhir_time(self, value: object, path: str) -> tuple[datetime, date] | None:
        text = self.json_string(value, path)
        parsed = None if text is None else _start_and_last_day(text)
        if text is not None and parsed is None:
            self.problems.append(f"{path}: not a FHIR date or dateTime: {text!r}")
        return parsed

    def period(self, value: object, path: str) -> tuple[date, date | None] | None:
        period = self.json_object(value, path)
        if period is None:
            return None
        start = self.fhir_time(period.get("start"), f"{path}.start")
        end_value = period.get("end")
        end = None if end_value is None else self.fhir_time(end_value, f"{path}.end")
        if start is None or (end_value is not None and end is None):
            return None
        first_day, last_day = start[0].date(), None if end is None else end[1]
        if last_day is not None and last_day < first_day:
            self.problems.append(f"{path}.end: {last_day} is before start {first_day}")
            return None
        return first_day, last_day


def _codings(concept: object) -> set[tuple[str, str]]:
    """(system, code) pairs of a CodeableConcept; a malformed one simply has none."""
    codings = concept.get("coding") if isinstance(concept, dict) else None
    if not isinstance(codings, list):
        return set()
    pairs = ((c.get("system"), c.get("code")) for c in codings if isinstance(c, dict))
    return {(system, code) for system, code in pairs if isinstance(system, str) and isinstance(code, str)}


#: The built-in policy codings: each MII policy OID names itself.
MII_POLICY_KEYS: Final[Mapping[tuple[str, str], str]] = MappingProxyType(
    {(POLICY_SYSTEM, c): c for c in MII_POLICY_CODES}
)


def parse_mii_consent(
    resource: dict[str, object], policies: Mapping[tuple[str, str], str] = MII_POLICY_KEYS
) -> MiiConsent:
    """Check `resource` against the MII consent profile; raise ConsentInvalid listing every problem.

    `policies` maps each (system, code) a provision may carry to its policy key (a consent domain's).
    """
    check = _Checker()
    root = check.json_object(resource, "Consent")
    if root is not None:
        _check_classification(check, root)
    return _read(check, root, policies, ("deny",))


def read_consent(resource: dict[str, object], policies: Mapping[tuple[str, str], str]) -> MiiConsent:
    """Read a Consent's status, patient, date and per-policy provisions, whatever profile it declares.

    This is for consents the trust centre computes itself from a template (gICS's own shape), which
    carry the policy structure of an MII consent without its classification.
    """
    check = _Checker()
    return _read(check, check.json_object(resource, "Consent"), policies, ("deny", "permit"))


def _read(
    check: _Checker, root: dict[str, object] | None, policies: Mapping[tuple[str, str], str], tops: tuple[str, ...]
) -> MiiConsent:
    if root is None:
        raise ConsentInvalid(check.problems)
    if root.get("resourceType") != "Consent":
        check.problems.append(f"Consent.resourceType: expected 'Consent', got {root.get('resourceType')!r}")
    status = check.json_string(root.get("status"), "Consent.status")
    if status is not None and status not in CONSENT_STATES:
        check.problems.append(f"Consent.status: unknown consent state {status!r}; known: {', '.join(CONSENT_STATES)}")
    reference, identifiers = _patient(check, root.get("patient"))
    signed = check.fhir_time(root.get("dateTime"), "Consent.dateTime")
    provisions = _provisions(check, root.get("provision"), policies, tops)
    if check.problems or status is None or signed is None:
        raise ConsentInvalid(check.problems)
    return MiiConsent(reference, identifiers, signed[0], status, provisions)


def _check_classification(check: _Checker, root: dict[str, object]) -> None:
    """Profile, scope, category and policy: what makes a Consent an MII research consent."""
    meta = root.get("meta")
    profiles = meta.get("profile") if isinstance(meta, dict) else None
    if not isinstance(profiles, list) or not any(
        isinstance(p, str) and p.split("|")[0] == MII_CONSENT_PROFILE for p in profiles
    ):
        check.problems.append(f"Consent.meta.profile: must contain {MII_CONSENT_PROFILE}")
    if (CONSENT_SCOPE_SYSTEM, "research") not in _codings(root.get("scope")):
        check.problems.append(f"Consent.scope: expected the coding {CONSENT_SCOPE_SYSTEM}#research")
    categories = root.get("category")
    category_codings = (
        {pair for concept in categories for pair in _codings(concept)} if isinstance(categories, list) else set()
    )
    if (LOINC_SYSTEM, RESEARCH_CONSENT_LOINC) not in category_codings:
        check.problems.append(f"Consent.category: missing the coding {LOINC_SYSTEM}#{RESEARCH_CONSENT_LOINC}")
    if MII_CATEGORY_CODE not in {code for _, code in category_codings}:  # its system URL changed between versions
        check.problems.append(f"Consent.category: missing the MII consent category {MII_CATEGORY_CODE}")
    policies = root.get("policy")
    if not isinstance(policies, list) or not any(
        isinstance(p, dict) and isinstance(p.get("uri"), str) for p in policies
    ):
        check.problems.append(
            "Consent.policy: expected at least one policy with a uri, e.g. " + BROAD_CONSENT_POLICY_URI
        )


def _patient(check: _Checker, value: object) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    patient = check.json_object(value, "Consent.patient")
    if patient is None:
        return None, ()
    if "reference" not in patient and "identifier" not in patient:
        check.problems.append("Consent.patient: needs a reference or an identifier")
        return None, ()
    reference = check.json_string(patient["reference"], "Consent.patient.reference") if "reference" in patient else None
    identifier = (
        check.json_object(patient["identifier"], "Consent.patient.identifier") if "identifier" in patient else None
    )
    if identifier is None:
        return reference, ()
    system = check.json_string(identifier.get("system"), "Consent.patient.identifier.system")
    id_value = check.json_string(identifier.get("value"), "Consent.patient.identifier.value")
    return reference, () if system is None or id_value is None else ((system, id_value),)


def _provisions(
    check: _Checker, value: object, policies: Mapping[tuple[str, str], str], tops: tuple[str, ...]
) -> tuple[PolicyProvision, ...]:
    """The nested per-policy provisions under the top-level deny, each policy once per period.

    (`tops` are the top-level types allowed: gICS's opt-out consent has a permit there.)
    """
    top = check.json_object(value, "Consent.provision")
    if top is None:
        return ()
    if top.get("type") not in tops:
        check.problems.append(
            f"Consent.provision.type: expected 'deny' (all not permitted is denied), got {top.get('type')!r}"
        )
    check.period(top.get("period"), "Consent.provision.period")
    nested = (
        [] if top.get("provision") is None else check.json_array(top["provision"], "Consent.provision.provision") or []
    )
    parsed: list[tuple[int, PolicyProvision]] = []
    for index, item in enumerate(nested):
        provision = _policy_provision(check, item, f"Consent.provision.provision[{index}]", policies)
        if provision is None:
            continue
        for earlier_index, earlier in parsed:
            if earlier.code == provision.code and _overlap(earlier, provision):
                check.problems.append(
                    f"Consent.provision.provision[{index}]: policy {provision.code!r} is already in "
                    f"provision[{earlier_index}] for an overlapping period"
                )
        parsed.append((index, provision))
    return tuple(provision for _, provision in parsed)


def _overlap(first: PolicyProvision, second: PolicyProvision) -> bool:
    return (second.end is None or first.start <= second.end) and (first.end is None or second.start <= first.end)


def _policy_provision(
    check: _Checker, value: object, path: str, policies: Mapping[tuple[str, str], str]
) -> PolicyProvision | None:
    provision = check.json_object(value, path)
    if provision is None:
        return None
    kind = provision.get("type")
    if kind not in ("permit", "deny"):
        check.problems.append(f"{path}.type: expected 'permit' or 'deny', got {kind!r}")
    period = check.period(provision.get("period"), f"{path}.period")
    code = _policy_code(check, provision.get("code"), f"{path}.code", policies)
    if kind not in ("permit", "deny") or period is None or code is None:
        return None
    return PolicyProvision(code=code, permit=kind == "permit", start=period[0], end=period[1])


def _policy_code(check: _Checker, value: object, path: str, policies: Mapping[tuple[str, str], str]) -> str | None:
    """The one policy a provision is about; anything else would be ambiguous to enforce.

    gICS names a policy by several codings (its own code system and the MII OID), in one or in
    several CodeableConcepts: every coding from a system the domain knows must name the same policy.
    """
    concepts = check.json_array(value, path)
    if concepts is None:
        return None
    if not concepts:
        check.problems.append(f"{path}: expected at least one CodeableConcept naming the policy")
        return None
    systems = {system for system, _ in policies}
    keys: set[str] = set()
    before = len(check.problems)
    for index, concept_value in enumerate(concepts):
        concept = check.json_object(concept_value, f"{path}[{index}]")
        codings = None if concept is None else check.json_array(concept.get("coding"), f"{path}[{index}].coding")
        for number, coding in enumerate(codings or []):
            key = _known_code(check, coding, f"{path}[{index}].coding[{number}]", policies, systems)
            keys |= {key} if key else set()
    if len(keys) != 1:
        if len(check.problems) > before:
            return None
        known = ", ".join(sorted(systems))
        check.problems.append(f"{path}: expected codings naming exactly one policy (from {known}), found {len(keys)}")
        return None
    return keys.pop()


def _known_code(
    check: _Checker, value: object, path: str, policies: Mapping[tuple[str, str], str], systems: set[str]
) -> str | None:
    coding = check.json_object(value, path)
    if coding is None:
        return None
    system, code = coding.get("system"), check.json_string(coding.get("code"), f"{path}.code")
    if not isinstance(system, str) or system not in systems or code is None:
        return None
    key = policies.get((system, code))
    if key is None:
        known = ", ".join(known_code for known_system, known_code in policies if known_system == system)
        check.problems.append(f"{path}.code: unknown policy code {code!r}; known: {known}")
    return key


def withdrawal_consent(
    patient: Mapping[str, object],
    withdrawn_on: date,
    codes: list[str],
    now: datetime,
    policies: Mapping[tuple[str, str], str] = MII_POLICY_KEYS,
) -> dict[str, object]:
    """A new MII consent of `patient` (a FHIR Reference) denying `codes` from `withdrawn_on` on, dated `now`.

    A withdrawal is recorded as a later consent rather than by editing the earlier one, so the
    history stays readable: policy states before `withdrawn_on` still come out as they were.
    `codes` are policy keys of `policies` (a consent domain's codings -> key), each written with
    every coding the domain knows it by. Raises ConsentInvalid when the inputs cannot make a valid
    consent (unknown or repeated code, naive `now`), ValueError when `codes` is empty.
    """
    if not codes:
        raise ValueError("a withdrawal names at least one policy code")
    codings = {key: [coding for coding, named in policies.items() if named == key] for key in codes}
    resource: dict[str, object] = {
        "resourceType": "Consent",
        "meta": {"profile": [MII_CONSENT_PROFILE]},
        "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE_SYSTEM, "code": "research"}]},
        "category": [
            {"coding": [{"system": LOINC_SYSTEM, "code": RESEARCH_CONSENT_LOINC}]},
            {"coding": [{"system": MII_CATEGORY_SYSTEM, "code": MII_CATEGORY_CODE}]},
        ],
        "patient": dict(patient),
        "dateTime": now.isoformat(timespec="seconds"),
        "policy": [{"uri": BROAD_CONSENT_POLICY_URI}],
        "provision": {
            "type": "deny",
            "period": {"start": withdrawn_on.isoformat()},
            "provision": [
                {
                    "type": "deny",
                    "period": {"start": withdrawn_on.isoformat()},
                    "code": [
                        {
                            "coding": [
                                {"system": system, "code": value, **_display(value)}
                                for system, value in codings[code] or [(POLICY_SYSTEM, code)]
                            ]
                        }
                    ],
                }
                for code in codes
            ],
        },
    }
    parse_mii_consent(resource, policies)
    return resource


def _display(code: str) -> dict[str, str]:
    display = MII_POLICY_CODES.get(code)
    return {} if display is None else {"display": display.german}
