"""Where a request's time went, as a `Server-Timing` header (W3C Server Timing).

Site IT and the benchmarks read it to tell the service's own work from the upstreams it waits on
(`validate;dur=12.1, link;dur=8.4, store;dur=140.2`), without a profiler and without logs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


class ServerTiming:
    """Milliseconds per named phase of one request; a phase entered twice adds up."""

    def __init__(self) -> None:
        """No phase timed yet."""
        self.milliseconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as `name` (also when it raises: a refusal's time is spent too)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            self.milliseconds[name] = self.milliseconds.get(name, 0.0) + elapsed

    def header(self) -> str:
        """The `Server-Timing` header value, phases in the order first entered."""
        return ", ".join(f"{name};dur={ms:.1f}" for name, ms in self.milliseconds.items())


def parse_server_timing(value: str) -> Mapping[str, float]:
    """Phase -> milliseconds of a `Server-Timing` header (metrics without `dur` are left out)."""
    found: dict[str, float] = {}
    for metric in value.split(","):
        name, *parameters = (part.strip() for part in metric.split(";"))
        for parameter in parameters:
            key, _, number = parameter.partition("=")
            if key.strip() == "dur":
                try:
                    found[name] = float(number)
                except ValueError:
                    continue
    return found
