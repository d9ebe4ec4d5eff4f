"""Stack config -> validated `StackSpec`: every mistake named by key, value and what is allowed.

Pure: takes the `hubnode:*` keys of a Pulumi stack config as plain Python values (as YAML or
`pulumi.Config.get_object` yields them) and does no I/O, so a broken stack fails before anything
is declared, and the CLI and the Pulumi program reject exactly the same files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from infra.errors import HubnodeError

Role = Literal["dic", "practice", "ttp", "research"]
Database = Literal["embedded", "postgres"]
ImageSourceKind = Literal["local", "registry"]

ROLES: tuple[str, ...] = get_args(Role)
DATABASES: tuple[str, ...] = get_args(Database)
IMAGE_SOURCES: tuple[str, ...] = get_args(ImageSourceKind)
#: Components this version can run; later issues add connector, portal, idp, gateway.
COMPONENTS: tuple[str, ...] = ("fhir", "trustcentre")
#: Images a site may point at its own registry (`hubnode:images.<name>`).
IMAGE_NAMES: tuple[str, ...] = ("fhir", "db", "trustcentre")
DEFAULT_PORTS: Mapping[str, int] = {"fhir": 8080, "trustcentre": 8081}
#: Settings a pseudonym domain may carry (checked in full by the trust centre at start-up).
DOMAIN_SETTINGS: Mapping[str, type] = {"alphabet": str, "length": int, "prefix": str, "check_digit": bool}
DEFAULT_BASE_IMAGE = "hubnode/base:trixie"

NAMESPACE = "hubnode"
#: Keys read by adapters rather than the spec (secrets never pass through plain data).
SECRET_KEYS: tuple[str, ...] = ("dbPassword", "trustcentreSecret", "trustcentreAdminToken")
KEYS: tuple[str, ...] = ("site", "role", "components", "database", "ports", "images", "domains", *SECRET_KEYS)

_SITE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
_STACK_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_IMAGE_REF_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the config: the full key (`hubnode:ports.fhir`), its value, the rule."""

    key: str
    value: object
    allowed: str

    def __str__(self) -> str:
        return f"{self.key} = {self.value!r}: {self.allowed}"


class SpecError(HubnodeError):
    """The stack config is invalid; lists every problem at once so one edit can fix them all."""

    def __init__(self, problems: list[Problem], source: str = "stack config") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"{source} is invalid:\n{lines}",
            fix=f"edit {source} (keys are documented in README.md, 'Stack configuration')",
        )


@dataclass(frozen=True)
class ImageSource:
    """Where a node's images come from: built here from `base_image`, or pulled from a registry.

    `overrides` maps an image name (`fhir`, `db`) to a full reference, e.g. the official
    `postgres:17`, whose environment contract our own database image follows.
    """

    kind: ImageSourceKind = "local"
    base_image: str = DEFAULT_BASE_IMAGE
    registry: str = ""
    overrides: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PseudonymDomain:
    """A pseudonym domain the trust centre creates at start-up (e.g. one per research project)."""

    name: str
    settings: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeSpec:
    """One hub node as its site declares it."""

    site: str
    role: Role
    components: tuple[str, ...]
    database: Database
    ports: Mapping[str, int]
    images: ImageSource
    domains: tuple[PseudonymDomain, ...] = ()


@dataclass(frozen=True)
class StackSpec:
    """A Pulumi stack: its name and the nodes it declares."""

    stack: str
    nodes: tuple[NodeSpec, ...]


def parse_stack(stack: str, config: Mapping[str, Any], source: str = "stack config") -> StackSpec:
    """Validate a stack's config (`{"hubnode:site": ..., ...}`); raise `SpecError` listing all problems.

    Keys outside the `hubnode:` namespace (e.g. `docker:host`) belong to other providers and pass.
    """
    problems: list[Problem] = []
    if not _STACK_PATTERN.match(stack):
        problems.append(Problem("stack name", stack, "letters, digits, '.', '_' or '-', at most 63"))
    ours = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith(f"{NAMESPACE}:")}
    problems += [
        Problem(f"{NAMESPACE}:{key}", value, f"unknown key; known keys: {', '.join(KEYS)}")
        for key, value in ours.items()
        if key not in KEYS
    ]
    node = _parse_node(ours, problems)
    if problems:
        raise SpecError(problems, source)
    assert node is not None  # noqa: S101 -- _parse_node returns None only with problems recorded
    return StackSpec(stack=stack, nodes=(node,))


def _parse_node(values: Mapping[str, Any], problems: list[Problem]) -> NodeSpec | None:
    before = len(problems)
    site = _parse_site(values.get("site"), problems)
    role = _choice("role", values.get("role", "dic"), ROLES, problems)
    components = _parse_components(values.get("components", ["fhir"]), problems)
    database = _choice("database", values.get("database", "embedded"), DATABASES, problems)
    ports = _parse_ports(values.get("ports", {}), components, problems)
    needed = (*components, "db") if database == "postgres" else components
    images = _parse_images(values.get("images", {}), needed, problems)
    domains = _parse_domains(values.get("domains", []), problems)
    if len(problems) > before or images is None:
        return None
    return NodeSpec(
        site=site,
        role=cast("Role", role),
        components=components,
        database=cast("Database", database),
        ports=ports,
        images=images,
        domains=domains,
    )


def _key(name: str) -> str:
    return f"{NAMESPACE}:{name}"


def _parse_site(value: object, problems: list[Problem]) -> str:
    if value is None:
        problems.append(Problem(_key("site"), None, "required: the node's site id, e.g. ukl-dic"))
        return ""
    if not isinstance(value, str) or not _SITE_PATTERN.match(value):
        problems.append(Problem(_key("site"), value, "2-32 lowercase letters, digits or '-', starting with a letter"))
        return ""
    return value


def _choice(name: str, value: object, allowed: tuple[str, ...], problems: list[Problem]) -> str:
    if value not in allowed:
        problems.append(Problem(_key(name), value, f"choose one of {', '.join(allowed)}"))
        return ""
    return str(value)


def _parse_components(value: object, problems: list[Problem]) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        problems.append(Problem(_key("components"), value, "a non-empty list, e.g. [fhir]"))
        return ()
    bad = [c for c in value if c not in COMPONENTS]
    if bad:
        problems.append(
            Problem(_key("components"), bad, f"unknown component; this version runs: {', '.join(COMPONENTS)}")
        )
        return ()
    if len(set(value)) != len(value):
        problems.append(Problem(_key("components"), value, "each component at most once"))
        return ()
    return tuple(cast("list[str]", value))


def _parse_ports(value: object, components: tuple[str, ...], problems: list[Problem]) -> dict[str, int]:
    if not isinstance(value, Mapping):
        problems.append(Problem(_key("ports"), value, "a mapping of component to host port, e.g. {fhir: 8080}"))
        return {}
    ports = {c: DEFAULT_PORTS[c] for c in components if c in DEFAULT_PORTS}
    for component, port in value.items():
        key = _key(f"ports.{component}")
        if component not in COMPONENTS:
            problems.append(Problem(key, port, f"no such component; ports exist for: {', '.join(COMPONENTS)}"))
        elif isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
            problems.append(Problem(key, port, "a whole number from 1024 to 65535"))
        else:
            ports[component] = port
    clashes = sorted({p for p in ports.values() if list(ports.values()).count(p) > 1})
    if clashes:
        problems.append(Problem(_key("ports"), dict(value), f"each component needs its own port; {clashes} used twice"))
    return ports


def _parse_domains(value: object, problems: list[Problem]) -> tuple[PseudonymDomain, ...]:
    if not isinstance(value, list):
        problems.append(Problem(_key("domains"), value, "a list of pseudonym domains, e.g. [{name: research}]"))
        return ()
    domains: list[PseudonymDomain] = []
    for index, entry in enumerate(value):
        key = _key(f"domains[{index}]")
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"]:
            problems.append(Problem(key, entry, "a mapping with a name, e.g. {name: research, prefix: R}"))
            continue
        settings = {k: v for k, v in entry.items() if k != "name"}
        for name, setting in settings.items():
            expected = DOMAIN_SETTINGS.get(name)
            if expected is None:
                problems.append(
                    Problem(f"{key}.{name}", setting, f"unknown setting; known: {', '.join(DOMAIN_SETTINGS)}")
                )
            elif not isinstance(setting, expected) or (expected is int and isinstance(setting, bool)):
                problems.append(Problem(f"{key}.{name}", setting, f"must be {expected.__name__}"))
        domains.append(PseudonymDomain(entry["name"], settings))
    names = [d.name for d in domains]
    if len(set(names)) != len(names):
        problems.append(Problem(_key("domains"), names, "each domain name at most once"))
    return tuple(domains)


def _parse_images(value: object, needed: tuple[str, ...], problems: list[Problem]) -> ImageSource | None:
    """Where images come from; with a registry, every image the node `needed` must resolve."""
    if not isinstance(value, Mapping):
        problems.append(Problem(_key("images"), value, "a mapping, e.g. {source: local}"))
        return None
    before = len(problems)
    kind = _choice("images.source", value.get("source", "local"), IMAGE_SOURCES, problems)
    base_image = value.get("base", DEFAULT_BASE_IMAGE)
    registry = value.get("registry", "")
    overrides = _parse_image_overrides(value, problems)
    if not _is_image_ref(base_image):
        problems.append(Problem(_key("images.base"), base_image, "an image reference, e.g. debian:trixie-slim"))
    if kind == "registry":
        missing = [n for n in IMAGE_NAMES if n in needed and n not in overrides]
        if missing and not _is_image_ref(registry):
            problems.append(
                Problem(
                    _key("images.registry"),
                    registry or None,
                    f"required with source: registry (images {', '.join(missing)} have no reference), "
                    "e.g. registry.site.example/hubnode",
                )
            )
    elif registry:
        problems.append(Problem(_key("images.registry"), registry, "only used with source: registry"))
    if len(problems) > before:
        return None
    return ImageSource(
        kind=cast("ImageSourceKind", kind), base_image=base_image, registry=registry, overrides=overrides
    )


def _parse_image_overrides(value: Mapping[str, Any], problems: list[Problem]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for name, ref in value.items():
        if name in ("source", "base", "registry"):
            continue
        if name not in IMAGE_NAMES:
            allowed = ", ".join(("source", "base", "registry", *IMAGE_NAMES))
            problems.append(Problem(_key(f"images.{name}"), ref, f"unknown key; known keys: {allowed}"))
        elif not _is_image_ref(ref):
            problems.append(Problem(_key(f"images.{name}"), ref, "an image reference, e.g. postgres:17"))
        else:
            overrides[name] = ref
    return overrides


def _is_image_ref(value: object) -> bool:
    return isinstance(value, str) and bool(_IMAGE_REF_PATTERN.match(value))
