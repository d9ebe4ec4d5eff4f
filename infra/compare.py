"""Two inventories side by side (`hubnode compare`): the stores whose count or digest differ.

A store one inventory lacks counts as empty there (a FHIR type a node holds none of is not listed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.errors import UsageError
from infra.inventory import FORMAT

#: SHA-256 of nothing: the digest of an empty store.
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@dataclass(frozen=True)
class Difference:
    """A store as each inventory has it (count, digest); what differs."""

    store: str
    first: tuple[int, str]
    second: tuple[int, str]

    @property
    def what(self) -> str:
        """`count` when the counts differ, else `content` (same count, other digest)."""
        return "count" if self.first[0] != self.second[0] else "content"


def read_inventory(path: Path) -> dict[str, Any]:
    """An inventory file `hubnode inventory` wrote; a clear error for anything else."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no inventory {path}", fix="name a file `hubnode inventory --output FILE` wrote") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UsageError(f"{path} is not an inventory: {error}", fix="name a file `hubnode inventory` wrote") from None
    stores = found.get("stores") if isinstance(found, dict) else None
    if not isinstance(found, dict) or found.get("format") != FORMAT or not isinstance(stores, dict):
        raise UsageError(f"{path} is not an inventory of format {FORMAT}", fix="name a file `hubnode inventory` wrote")
    for name, store in stores.items():
        if not (
            isinstance(store, dict) and isinstance(store.get("count"), int) and isinstance(store.get("digest"), str)
        ):
            raise UsageError(f"{path}: store {name!r} has no count and digest", fix="take the inventory again")
    return found


def differences(first: dict[str, Any], second: dict[str, Any]) -> list[Difference]:
    """The stores whose count or digest differ between two inventories, by name."""
    found = []
    for name in sorted(first["stores"].keys() | second["stores"].keys()):
        one, other = _held(first, name), _held(second, name)
        if one != other:
            found.append(Difference(name, one, other))
    return found


def _held(inventory: dict[str, Any], name: str) -> tuple[int, str]:
    store = inventory["stores"].get(name) or {"count": 0, "digest": EMPTY}
    return int(store["count"]), str(store["digest"])


def table(first: dict[str, Any], second: dict[str, Any], found: list[Difference]) -> str:
    """The differences as a table headed by the two inventories (site, stack, time); or that there are none."""
    heads = [f"{i['site']} of {i['stack']} at {i['taken']}" for i in (first, second)]
    if not found:
        return f"identical: {len(first['stores'])} stores of {heads[0]} and {heads[1]}"
    width = max(len("store"), *(len(d.store) for d in found))
    lines = [f"A: {heads[0]}", f"B: {heads[1]}", f"{'store':<{width}}  {'A':>9}  {'B':>9}  differs in"]
    lines += [f"{d.store:<{width}}  {d.first[0]:>9}  {d.second[0]:>9}  {d.what}" for d in found]
    lines.append(f"{len(found)} of {len(first['stores'].keys() | second['stores'].keys())} stores differ")
    return "\n".join(lines)


def as_json(first: dict[str, Any], second: dict[str, Any], found: list[Difference]) -> dict[str, Any]:
    """The comparison for `--json`."""
    return {
        "identical": not found,
        "a": {k: first.get(k) for k in ("stack", "site", "taken")},
        "b": {k: second.get(k) for k in ("stack", "site", "taken")},
        "differences": [
            {
                "store": d.store,
                "differs_in": d.what,
                "a": {"count": d.first[0], "digest": d.first[1]},
                "b": {"count": d.second[0], "digest": d.second[1]},
            }
            for d in found
        ],
    }
