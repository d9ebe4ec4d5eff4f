"""How this node writes what its sources send: at ids derived from their keys, or by identifier.

A write at a known id (`PUT Type/hn-<uuid5 of the key>`) costs HAPI less than a conditional update
(`PUT Type?identifier=...`), which first searches the identifier: the connector's transactions go in
some 1.15 to 1.2 times as fast (`./dev bench -- resource-ids`). But a node that stored resources by
identifier before keeps doing so: HAPI gave those resources ids of its own, and a write at a derived id
would store a twin of each one sent again. So the choice is made once, at the connector's first write,
and kept in its database: derived ids only if HAPI has never held a resource. Connectors sharing the
database share the choice; a database lost beside a filled HAPI falls back to identifiers, which find
resources whatever their ids.

Only nodes whose HAPI stores on PostgreSQL ask for derived ids (`CN_RESOURCE_IDS=derived`): on the
embedded H2, HAPI's write of a new resource at a client-assigned id slows as its tables grow.
"""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from connector.db import resource_ids
from connector.hapi import HapiClient

LOG = logging.getLogger("connector")

#: The one row of `resource_ids`.
ROW = "resources"


class Scheme(StrEnum):
    """Where a resource is written: at an id derived from its key, or by a conditional update on its identifier."""

    DERIVED = "derived"
    IDENTIFIER = "identifier"


class ResourceIds:
    """The node's scheme: by identifier unless derived ids are `wanted`; then as recorded, else decided and recorded."""

    def __init__(self, engine: Engine, hapi: HapiClient, wanted: Scheme) -> None:
        self._engine, self._hapi = engine, hapi
        self._scheme: Scheme | None = None if wanted is Scheme.DERIVED else Scheme.IDENTIFIER

    async def derived(self) -> bool:
        """Whether resources are written at derived ids (decided on the first call, then remembered)."""
        if self._scheme is None:
            scheme = await asyncio.to_thread(recorded, self._engine)
            if scheme is None:
                fresh = await self._hapi.holds_nothing()
                scheme = await asyncio.to_thread(record, self._engine, Scheme.DERIVED if fresh else Scheme.IDENTIFIER)
            LOG.info("resources are written %s", DESCRIBED[scheme])
            self._scheme = scheme
        return self._scheme is Scheme.DERIVED


DESCRIBED = {
    Scheme.DERIVED: "at ids derived from their keys (HAPI held nothing at the first write)",
    Scheme.IDENTIFIER: "by identifier (HAPI held resources at the first write, which may carry ids HAPI gave them)",
}


def recorded(engine: Engine) -> Scheme | None:
    """The scheme the database records, if one was decided."""
    with engine.connect() as connection:
        value = connection.execute(select(resource_ids.c.scheme).where(resource_ids.c.name == ROW)).scalar()
    return None if value is None else Scheme(value)


def record(engine: Engine, scheme: Scheme) -> Scheme:
    """Record `scheme` unless another connector recorded one first; the scheme that holds."""
    try:
        with engine.begin() as connection:
            connection.execute(resource_ids.insert().values(name=ROW, scheme=scheme.value))
    except IntegrityError:
        held = recorded(engine)
        if held is None:
            raise
        return held
    return scheme
