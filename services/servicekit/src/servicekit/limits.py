"""Hostile-input limits on request bodies: JSON nesting depth, items, string length, and time to arrive.

Every service reads them from its environment (`<PREFIX>_JSON_MAX_DEPTH`, `<PREFIX>_JSON_MAX_ITEMS`,
`<PREFIX>_JSON_MAX_STRING_BYTES`, `<PREFIX>_BODY_SECONDS`) with the safe defaults below, and installs
them with `ApplyInputLimits`: they then hold for everything done while serving a request, so every
parser on its path (`servicekit.fhir.parse_json`, `servicekit.web.read_body`), however deep inside a
process it runs, applies the service's limits without each caller passing them along.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields, replace
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from servicekit.config import ConfigError


@dataclass(frozen=True)
class InputLimits:
    """What one request body may cost; past any limit the request is refused with a 4xx, nothing stored."""

    #: Arrays and objects inside each other. FHIR resources nest up to 15-20 levels (the MII example
    #: bundles: 15), so 64 leaves room for deep extensions and contained resources while staying far
    #: below the ~1,000 levels at which Python's parser gives up (RecursionError).
    json_max_depth: int = 64
    #: Array items and object members in one body, all arrays and objects together. MII bundles hold
    #: about 12 per kB, about 400,000 in 32 MB; a hostile body of empty arrays costs Python 80 bytes an item.
    json_max_items: int = 1_000_000
    #: The longest string, in bytes as written (escapes included). Identifiers, codes and narrative stay
    #: far below; base64 attachments are what come near it.
    json_max_string_bytes: int = 1024 * 1024
    #: How long a client may take to send its body once the request has begun.
    body_seconds: float = 60.0


DEFAULT_INPUT_LIMITS = InputLimits()
_CURRENT: ContextVar[InputLimits] = ContextVar("servicekit_input_limits", default=DEFAULT_INPUT_LIMITS)


def current_input_limits() -> InputLimits:
    """The limits of the request being served (the defaults outside one)."""
    return _CURRENT.get()


@contextmanager
def input_limits(limits: InputLimits) -> Iterator[None]:
    """`limits` hold inside the block (in this context and the tasks and threads it starts)."""
    token = _CURRENT.set(limits)
    try:
        yield
    finally:
        _CURRENT.reset(token)


class ApplyInputLimits:
    """ASGI middleware: `limits` hold while the app serves each request."""

    def __init__(self, app: ASGIApp, limits: InputLimits) -> None:
        self._app = app
        self._limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request (or the lifespan) under the limits."""
        with input_limits(self._limits):
            await self._app(scope, receive, send)


def input_limits_from_environment(prefix: str, environ: Mapping[str, str], defaults: InputLimits) -> InputLimits:
    """`defaults` with each limit its `<prefix>_<NAME>` variable sets; a value that is not a positive number stops."""
    given: dict[str, Any] = {}  # int or float, as each default is
    for limit in fields(InputLimits):
        variable = f"{prefix}_{limit.name.upper()}"
        if variable not in environ:
            continue
        kind = type(getattr(defaults, limit.name))
        try:
            value = kind(environ[variable])
        except ValueError:
            value = 0
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{variable}={environ[variable]!r}: a positive {kind.__name__} is required")
        given[limit.name] = value
    return replace(defaults, **given)
