"""Consent domains, their policies and templates: what a site's gICS would be configured with.

A domain (gICS "Einwilligungsdomäne") offers policies, each named by gICS's policy code system and
by any other codings it is known by (the MII OIDs), and templates whose modules bundle policies. The
stack declares them (`TC_CONSENT_DOMAINS_FILE`); with nothing declared the MII broad consent is the
one built-in domain, so today's callers keep working. Policy keys are what stored provisions are
decided on: the first coding's code, so a consent stays readable whatever coding it was given with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from servicekit.config import ConfigError
from servicekit.fhir import FhirError
from trustcentre.mii_consent import MII_POLICY_CODES, POLICY_SYSTEM

GICS_POLICY_SYSTEM: Final = "https://ths-greifswald.de/fhir/CodeSystem/gics/Policy"
SIGNER_ID_PREFIX: Final = "https://ths-greifswald.de/fhir/gics/identifiers/"
#: A template is referred to as `<domain>;<name>;<version>` (`template`) or by its questionnaire canonical.
QUESTIONNAIRE_PREFIX: Final = "https://ths-greifswald.de/fhir/gics/QuestionnaireComposed/"
TEMPLATE_TYPES: Final = ("consent", "opt-out")
DEFAULT_VALIDITY_YEARS: Final = 30
MII_DOMAIN: Final = "MII"


@dataclass(frozen=True)
class Policy:
    """One policy of a domain; `codings[0]` is how answers name it and its code is the stored key."""

    codings: tuple[tuple[str, str], ...]
    version: str | None = None

    @property
    def key(self) -> str:
        """The code of its first coding: what stored provisions are decided on."""
        return self.codings[0][1]


@dataclass(frozen=True)
class Module:
    """A versioned part of a template that a person accepts or refuses as a whole."""

    name: str
    version: str
    policies: tuple[str, ...]

    @property
    def link_id(self) -> str:
        """How a QuestionnaireResponse item names the module (`name|version`, as the IG requires)."""
        return f"{self.name}|{self.version}"


@dataclass(frozen=True)
class Template:
    """A consent template: opt-in (`consent`: modules answered) or `opt-out` (all modules hold until refused)."""

    domain: str
    name: str
    version: str
    kind: str
    modules: tuple[Module, ...]
    validity_years: int = DEFAULT_VALIDITY_YEARS

    @property
    def ref(self) -> str:
        """The IG's template id: `<domain>;<name>;<version>`."""
        return f"{self.domain};{self.name};{self.version}"

    @property
    def questionnaire(self) -> str:
        """The canonical a QuestionnaireResponse names the template by (spaces as `+`, as gICS writes it)."""
        return f"{QUESTIONNAIRE_PREFIX}{self.domain}/{self.name.replace(' ', '+')}|{self.version}"


@dataclass(frozen=True)
class ConsentDomain:
    """A consent domain: its policies by key, its templates, the signer id types persons are named by."""

    name: str
    policies: Mapping[str, Policy]
    templates: tuple[Template, ...] = ()
    signer_id_types: tuple[str, ...] = ()

    def policy_keys(self) -> dict[tuple[str, str], str]:
        """Every (system, code) the domain knows -> its policy key."""
        return {coding: policy.key for policy in self.policies.values() for coding in policy.codings}

    def policy(self, system: str, code: str, where: str = "policy") -> Policy:
        """The policy a coding names; an unknown one is a 404 naming `where`."""
        key = self.policy_keys().get((system, code))
        if key is None:
            raise FhirError(
                404, "not-found", f"{where}: {system}|{code} is no policy of domain {self.name!r}", (where,)
            )
        return self.policies[key]

    def template(self, name: str, version: str | None, where: str) -> Template:
        """The template `name` (in `version`, or its highest version); unknown ones are a 404 naming `where`."""
        found = [t for t in self.templates if t.name == name and version in {None, t.version}]
        if not found:
            known = ", ".join(t.ref for t in self.templates) or "none"
            raise FhirError(
                404, "not-found", f"{where}: no template {name!r} {version or ''} in {self.name!r}; known: {known}"
            )
        return max(found, key=lambda t: _version_order(t.version))

    def template_by_ref(self, ref: str, where: str = "template") -> Template:
        """The template named `<domain>;<name>;<version>`."""
        parts = ref.split(";")
        if len(parts) != 3 or parts[0] != self.name:
            raise FhirError(400, "invalid", f"{where}: expected '{self.name};<name>;<version>', got {ref!r}", (where,))
        return self.template(parts[1], parts[2], where)

    def template_by_questionnaire(self, canonical: str, where: str) -> Template:
        """The template a questionnaire canonical (`…/QuestionnaireComposed/<domain>/<name>|<version>`) names."""
        path, _, version = canonical.partition("|")
        prefix = f"{QUESTIONNAIRE_PREFIX}{self.name}/"
        if not path.startswith(prefix):
            raise FhirError(400, "invalid", f"{where}: {canonical!r} does not start with {prefix}", (where,))
        return self.template(path.removeprefix(prefix).replace("+", " "), version or None, where)


@dataclass(frozen=True)
class ConsentRegistry:
    """The consent domains a trust centre serves."""

    domains: Mapping[str, ConsentDomain]

    def domain(self, name: str) -> ConsentDomain:
        """The domain `name`; an unknown one is a 404 naming `domain`."""
        found = self.domains.get(name)
        if found is None:
            known = ", ".join(sorted(self.domains))
            raise FhirError(404, "not-found", f"domain: no consent domain {name!r}; known: {known}", ("domain",))
        return found


def _version_order(version: str) -> tuple[tuple[int, str], ...]:
    """Versions compare part by part, numbers as numbers ("1.10" after "1.9", "1.6.f" after "1.6.d")."""
    return tuple((int(part), "") if part.isdigit() else (-1, part) for part in version.split("."))


def _mii_builtin() -> ConsentRegistry:
    policies = {code: Policy(((POLICY_SYSTEM, code),)) for code in MII_POLICY_CODES}
    return ConsentRegistry({MII_DOMAIN: ConsentDomain(MII_DOMAIN, policies)})


#: Used when the stack declares no consent domains: the MII broad consent, its policies by their OIDs.
MII_BROAD_CONSENT: Final = _mii_builtin()


def registry_from_config(config: Any, source: str = "TC_CONSENT_DOMAINS_FILE") -> ConsentRegistry:  # noqa: ANN401
    """Domains from `{"domains": [{"name", "signerIdTypes", "policies": [...], "templates": [...]}]}`."""
    entries = config.get("domains") if isinstance(config, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f'{source}: expected {{"domains": [...]}} with at least one domain')
    domains: dict[str, ConsentDomain] = {}
    for index, entry in enumerate(entries):
        domain = _domain(entry, f"{source}: domains[{index}]")
        if domain.name in domains:
            raise ConfigError(f"{source}: domains[{index}].name: {domain.name!r} is declared twice")
        domains[domain.name] = domain
    return ConsentRegistry(domains)


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip() or ";" in value or "|" in value:
        raise ConfigError(f"{where}.{key}: expected a non-empty string without ';' or '|'")
    return value


def _list(entry: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = entry.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"{where}.{key}: expected a list")
    return value


def _domain(entry: Any, where: str) -> ConsentDomain:  # noqa: ANN401
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object")
    name = _text(entry, "name", where)
    signers = tuple(_list(entry, "signerIdTypes", where))
    if not all(isinstance(s, str) and s.strip() and "/" not in s for s in signers):
        raise ConfigError(f"{where}.signerIdTypes: expected names of signer id types, e.g. [Pseudonym]")
    policies: dict[str, Policy] = {}
    known: set[tuple[str, str]] = set()
    for index, raw in enumerate(_list(entry, "policies", where)):
        policy = _policy(raw, f"{where}.policies[{index}]")
        if known & set(policy.codings):
            raise ConfigError(f"{where}.policies[{index}]: a coding of {policy.key!r} names another policy too")
        known |= set(policy.codings)
        policies[policy.key] = policy
    if not policies:
        raise ConfigError(f"{where}.policies: a domain needs at least one policy")
    templates = tuple(
        _template(raw, name, policies, f"{where}.templates[{index}]")
        for index, raw in enumerate(_list(entry, "templates", where))
    )
    refs = [t.ref for t in templates]
    if len(set(refs)) != len(refs):
        raise ConfigError(f"{where}.templates: a template name and version is declared twice")
    return ConsentDomain(name, policies, templates, signers)


def _policy(raw: Any, where: str) -> Policy:  # noqa: ANN401
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected an object")
    codings = [(GICS_POLICY_SYSTEM, _text(raw, "name", where))]
    for index, coding in enumerate(_list(raw, "codings", where)):
        if not isinstance(coding, dict):
            raise ConfigError(f"{where}.codings[{index}]: expected {{system, code}}")
        codings.append(
            (_text(coding, "system", f"{where}.codings[{index}]"), _text(coding, "code", f"{where}.codings[{index}]"))
        )
    version = raw.get("version")
    if version is not None and not isinstance(version, str):
        raise ConfigError(f"{where}.version: expected a string")
    return Policy(tuple(codings), version)


def _template(raw: Any, domain: str, policies: Mapping[str, Policy], where: str) -> Template:  # noqa: ANN401
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected an object")
    kind = raw.get("type", "consent")
    if kind not in TEMPLATE_TYPES:
        raise ConfigError(f"{where}.type: one of {', '.join(TEMPLATE_TYPES)}, got {kind!r}")
    years = raw.get("validityYears", DEFAULT_VALIDITY_YEARS)
    if not isinstance(years, int) or isinstance(years, bool) or not 0 < years <= 1000:
        raise ConfigError(f"{where}.validityYears: expected a whole number of years from 1 to 1000")
    modules = []
    for index, module in enumerate(_list(raw, "modules", where)):
        at = f"{where}.modules[{index}]"
        if not isinstance(module, dict):
            raise ConfigError(f"{at}: expected an object")
        names = _list(module, "policies", at)
        unknown = [n for n in names if n not in policies]
        if unknown or not names:
            raise ConfigError(f"{at}.policies: expected policies of the domain by name; unknown: {unknown}")
        modules.append(Module(_text(module, "name", at), _text(module, "version", at), tuple(names)))
    if not modules:
        raise ConfigError(f"{where}.modules: a template needs at least one module")
    return Template(domain, _text(raw, "name", where), _text(raw, "version", where), kind, tuple(modules), years)
