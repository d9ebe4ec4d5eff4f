"""Secondary pseudonyms: further pseudonyms of one original, in domains that allow several.

gPAS calls these multi-pseudonym domains: one pseudonym per record (a sample, a visit) rather than one
per person, each resolving to the same original. A secondary pseudonym is drawn at random, not derived
from the original: a caller asking twice wants two new ones, and nothing should recompute them. Each
is unique in its domain, among the primary pseudonyms too, so `$dePseudonymize` finds one original.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sqlalchemy import Connection

from servicekit.db import bulk_insert
from servicekit.fhir import FhirError
from trustcentre.db import secondary_pseudonyms
from trustcentre.pseudonym_scheme import DomainSettings, random_pseudonym
from trustcentre.pseudonyms import MAX_ATTEMPTS, held


def add_secondary(
    connection: Connection, domain: str, settings: DomainSettings, wanted: Sequence[tuple[str, int]]
) -> list[list[str]]:
    """For each (original, count): `count` new pseudonyms of the original in `domain`, stored."""
    made = [[random_pseudonym(settings) for _ in range(count)] for _, count in wanted]
    for _attempt in range(MAX_ATTEMPTS):
        drawn = [value for values in made for value in values]
        clashes = held(connection, domain, drawn) | {value for value, n in Counter(drawn).items() if n > 1}
        if not clashes:
            rows = [
                {"domain": domain, "original": original, "pseudonym": value}
                for (original, _), values in zip(wanted, made, strict=True)
                for value in values
            ]
            bulk_insert(connection, secondary_pseudonyms, rows)
            return made
        made = [[random_pseudonym(settings) if value in clashes else value for value in values] for values in made]
    raise FhirError(409, "conflict", f"domain {domain!r} found no free pseudonym after {MAX_ATTEMPTS} attempts")
