"""Reading the `Parameters` every trust-centre operation takes, and building the ones it answers.

Every malformed parameter ends here as a `FhirError` naming the parameter at fault, which the app
turns into a 4xx with an OperationOutcome, so no operation has to guard against stray types.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, overload

from servicekit.fhir import FhirError, parse_fhir_date, parse_json_resource

GPAS_IDENTIFIER_SYSTEM = "https://ths-greifswald.de/gpas"


@dataclass(frozen=True)
class Parameters:
    """Read access to a FHIR `Parameters` resource (or to the `part` list of one parameter)."""

    parts: tuple[Mapping[str, Any], ...]
    path: str = "Parameters.parameter"

    @classmethod
    def from_body(cls, body: bytes) -> Parameters:
        """Parse a request body; every structural mistake becomes a 400 naming where it is."""
        resource = parse_json_resource(body, "Parameters")
        parameter = resource.get("parameter", [])
        if not isinstance(parameter, list):
            raise FhirError(400, "structure", "Parameters.parameter must be a list", ("Parameters.parameter",))
        return cls.from_list(parameter, "Parameters.parameter")

    @classmethod
    def from_list(cls, parameter: list[Any], path: str) -> Parameters:
        """Check that every entry is an object with a string `name`."""
        for index, part in enumerate(parameter):
            if not isinstance(part, dict) or not isinstance(part.get("name"), str):
                raise FhirError(
                    400, "structure", f"{path}[{index}] must be an object with a string name", (f"{path}[{index}]",)
                )
        return cls(tuple(parameter), path)

    def named(self, name: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """Each parameter called `name`, with its FHIRPath-ish location for error messages."""
        for index, part in enumerate(self.parts):
            if part["name"] == name:
                yield f"{self.path}[{index}]", part

    def strings(self, name: str, *, minimum: int = 0) -> list[str]:
        """All `valueString` values of `name` (gPAS also accepts Identifier values: their `value`)."""
        values = [self._string(location, part) for location, part in self.named(name)]
        if len(values) < minimum:
            raise FhirError(400, "required", f"parameter {name!r} is required", (f"{self.path}.where(name='{name}')",))
        return values

    def identifiers(self, name: str) -> list[tuple[str, str]]:
        """All `valueIdentifier` values of `name` as (system, value), each part of 1-255 characters."""
        found = []
        for location, part in self.named(name):
            value = part.get("valueIdentifier")
            system, text = (value.get("system"), value.get("value")) if isinstance(value, dict) else (None, None)
            if not isinstance(system, str) or not isinstance(text, str):
                raise FhirError(
                    400,
                    "invalid",
                    f"{location} ({name}) must carry a valueIdentifier with system and value",
                    (location,),
                )
            if not (0 < len(system) <= MAX_VALUE_LENGTH and len(text.strip()) > 0 and len(text) <= MAX_VALUE_LENGTH):
                raise FhirError(
                    400, "invalid", f"{location} ({name}): system and value must be 1-255 characters", (location,)
                )
            found.append((system, text))
        if not found:
            raise FhirError(400, "required", f"parameter {name!r} is required", (f"{self.path}.where(name='{name}')",))
        return found

    def string(self, name: str, *, required: bool = True, default: str | None = None) -> str | None:
        """The one `valueString` of `name`; a repeated parameter is an error."""
        values = self.strings(name, minimum=1 if required else 0)
        if len(values) > 1:
            raise FhirError(400, "invalid", f"parameter {name!r} may appear only once", (self.path,))
        return values[0] if values else default

    def boolean(self, name: str, default: bool) -> bool:
        """The one `valueBoolean` of `name`, or `default`."""
        found = list(self.named(name))
        if not found:
            return default
        location, part = found[-1]
        value = part.get("valueBoolean")
        if not isinstance(value, bool):
            raise FhirError(400, "invalid", f"{location} ({name}) must carry valueBoolean", (location,))
        return value

    def coding(self, name: str) -> Mapping[str, Any] | None:
        """The one `valueCoding` of `name` (with string system and code), or None."""
        found = list(self.named(name))
        if not found:
            return None
        location, part = found[0]
        value = part.get("valueCoding")
        if (
            not isinstance(value, dict)
            or not isinstance(value.get("code"), str)
            or not isinstance(value.get("system"), str)
        ):
            raise FhirError(
                400, "invalid", f"{location} ({name}) must carry a valueCoding with system and code", (location,)
            )
        return value

    def date(self, name: str) -> date | None:
        """The one `valueDate`/`valueDateTime` of `name` as a date, or None."""
        found = list(self.named(name))
        if not found:
            return None
        location, part = found[0]
        raw = part.get("valueDateTime", part.get("valueDate"))
        if not isinstance(raw, str):
            raise FhirError(400, "invalid", f"{location} ({name}) must carry valueDate or valueDateTime", (location,))
        try:
            return parse_fhir_date(raw)
        except ValueError:
            raise FhirError(400, "invalid", f"{location} ({name}): {raw!r} is not a FHIR date", (location,)) from None

    def sub(self, name: str) -> Parameters | None:
        """The `part` list of parameter `name` (e.g. gICS `config`), or None."""
        found = list(self.named(name))
        if not found:
            return None
        location, part = found[0]
        inner = part.get("part", [])
        if not isinstance(inner, list):
            raise FhirError(400, "structure", f"{location}.part must be a list", (location,))
        return Parameters.from_list(inner, f"{location}.part")

    def each(self, name: str) -> list[tuple[str, Parameters]]:
        """The `part` list of every parameter `name` (gPAS's per-item triples), at least one; with locations."""
        found = []
        for location, part in self.named(name):
            inner = part.get("part")
            if not isinstance(inner, list):
                raise FhirError(400, "structure", f"{location} ({name}) must carry a part list", (location,))
            found.append((location, Parameters.from_list(inner, f"{location}.part")))
        if not found:
            raise FhirError(400, "required", f"parameter {name!r} is required", (f"{self.path}.where(name='{name}')",))
        return found

    def resource(self, name: str) -> Mapping[str, Any] | None:
        """The one `resource` of parameter `name`, or None."""
        found = list(self.named(name))
        if not found:
            return None
        location, part = found[0]
        value = part.get("resource")
        if not isinstance(value, dict):
            raise FhirError(400, "invalid", f"{location} ({name}) must carry a resource", (location,))
        return value

    def resources(self, name: str, resource_type: str, *, minimum: int = 0) -> list[tuple[str, Mapping[str, Any]]]:
        """Each `resource` of parameter `name`, of `resource_type`, with the location of its parameter."""
        found: list[tuple[str, Mapping[str, Any]]] = []
        for location, part in self.named(name):
            value = part.get("resource")
            if not isinstance(value, dict) or value.get("resourceType") != resource_type:
                raise FhirError(
                    400, "invalid", f"{location} ({name}) must carry a {resource_type} resource", (location,)
                )
            found.append((location, value))
        if len(found) < minimum:
            raise FhirError(400, "required", f"parameter {name!r} is required", (f"{self.path}.where(name='{name}')",))
        return found

    def integers(self, name: str, *, minimum: int = 0, at_least: int = 0) -> list[int]:
        """Integers of `name`, each at least `at_least`: valueInteger, or digits as valueString (the IGs send both)."""
        values = []
        for location, part in self.named(name):
            value = part.get("valueInteger", part.get("valueString"))
            if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= MAX_DIGITS:
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool) or not at_least <= value < MAX_INTEGER:
                raise FhirError(
                    400, "invalid", f"{location} ({name}) must carry an integer of at least {at_least}", (location,)
                )
            values.append(value)
        if len(values) < minimum:
            raise FhirError(400, "required", f"parameter {name!r} is required", (f"{self.path}.where(name='{name}')",))
        return values

    @overload
    def integer(self, name: str, *, at_least: int = 0) -> int: ...
    @overload
    def integer(self, name: str, *, required: bool, at_least: int = 0) -> int | None: ...
    def integer(self, name: str, *, required: bool = True, at_least: int = 0) -> int | None:
        """The one integer of `name` (see `integers`); a repeated parameter is an error."""
        values = self.integers(name, minimum=1 if required else 0, at_least=at_least)
        if len(values) > 1:
            raise FhirError(400, "invalid", f"parameter {name!r} may appear only once", (self.path,))
        return values[0] if values else None

    @staticmethod
    def _string(location: str, part: Mapping[str, Any]) -> str:
        value = part.get("valueString")
        if value is None and isinstance(part.get("valueIdentifier"), dict):
            value = part["valueIdentifier"].get("value")
        if not isinstance(value, str) or not value.strip():
            raise FhirError(
                400, "invalid", f"{location} ({part['name']}) must carry a non-empty valueString", (location,)
            )
        if "\x00" in value:  # no database stores it, and pseudonyms are derived with it as a separator
            raise FhirError(400, "invalid", f"{location} ({part['name']}) must not contain NUL characters", (location,))
        if len(value) > MAX_VALUE_LENGTH:
            raise FhirError(
                400,
                "too-long",
                f"{location} ({part['name']}) is longer than {MAX_VALUE_LENGTH} characters",
                (location,),
            )
        return value


MAX_VALUE_LENGTH = 255
#: FHIR's integer is 32-bit signed; given as a string, at most this many digits.
MAX_INTEGER, MAX_DIGITS = 2**31, 10


def identifier(value: str, system: str = GPAS_IDENTIFIER_SYSTEM) -> dict[str, str]:
    """A FHIR Identifier."""
    return {"system": system, "value": value}


def parameters(*parts: Mapping[str, Any]) -> dict[str, Any]:
    """A FHIR Parameters resource from its parts."""
    return {"resourceType": "Parameters", "parameter": list(parts)}
