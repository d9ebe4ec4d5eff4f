"""What the connector last wrote of each person's Patient (identifiers, version): a stand-in for reading it back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector.hapi import Read
from connector.lru import Lru

#: Persons remembered at most (their identifiers: a few hundred bytes each).
CAPACITY = 10_000


class KnownPersons:
    """The node's record of each person (by person id) as this connector last wrote it, least recently used forgotten.

    Every ingest of a person merges their Patient with the node's record of them; remembering the
    record spares reading it first. It is only ever a guess: the write names the remembered version
    (`ifMatch`), so if anything changed the record meanwhile (another ingest, another connector, a
    deletion), HAPI refuses the write and the ingest reads the record. Identifiers that hold a
    reference are not remembered, since HAPI stores a reference resolved, not as it was sent.
    """

    def __init__(self, capacity: int = CAPACITY) -> None:
        """Remember up to `capacity` persons."""
        self._records: Lru[str, Read] = Lru(capacity)

    def recall(self, person: str) -> Read | None:
        """The record of `person` as last written here, None if it is not remembered."""
        return self._records.get(person)

    def remember(self, person: str, written: Mapping[str, Any], response: Mapping[str, Any]) -> None:
        """Remember the Patient `written` in a transaction at the version its entry's `response` names."""
        identifiers = written.get("identifier", [])
        version = written_version(response)
        if version is None or _holds_reference(identifiers):
            self._records.forget(person)
            return
        record = {"resourceType": "Patient", "identifier": identifiers, "meta": {"versionId": version}}
        self._records.put(person, Read(record))

    def forget(self, person: str) -> None:
        """Drop what is remembered of `person` (it changed elsewhere)."""
        self._records.forget(person)


def written_version(response: Mapping[str, Any]) -> str | None:
    """The version a transaction-response entry's `response` says was written (`etag`, else `location`)."""
    etag = response.get("etag")
    if isinstance(etag, str) and etag.strip():
        return etag.strip().removeprefix("W/").strip('"')
    location = response.get("location")
    if isinstance(location, str) and "/_history/" in location:
        return location.rsplit("/_history/", 1)[1]
    return None


def _holds_reference(value: Any) -> bool:  # noqa: ANN401 -- any JSON value
    if isinstance(value, list):
        return any(_holds_reference(item) for item in value)
    if isinstance(value, dict):
        return "reference" in value or any(_holds_reference(item) for item in value.values())
    return False
