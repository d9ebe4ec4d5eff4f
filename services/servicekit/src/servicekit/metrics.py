"""Prometheus metrics of a service: its requests by route template, its process, readings of its own state.

Site IT scrapes `GET /metrics` of each service on the node's own network (README, "Monitoring"); the
gateway routes no path there, so other nodes never reach it. Label values stay few and free of patient
data: a request is named by the route template it matched (`/fhir/{type}/{id}`), never by its path, and by
the class of its status (`2xx`), so neither an id nor a scanner's random paths add a series.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, disable_created_metrics, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOG = logging.getLogger("servicekit.metrics")
#: Prometheus' text exposition format 0.0.4, which every Prometheus server reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Seconds: from a health check's millisecond to an ingest or a feasibility round waiting on HAPI and
#: peers (the gateway gives up on an upstream after 300 s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: Methods counted under their name; the client chooses the method, so any other is counted as `other`.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The route label of a request no route matched: typos and scanners' random paths alike.
UNMATCHED = "unmatched"

# No `_created` series beside every counter and histogram: it would double the series, and
# `process_start_time_seconds` says when counting began (the switch is process-wide; ours are its only users).
disable_created_metrics()  # type: ignore[no-untyped-call]  # the library leaves it unannotated


@dataclass(frozen=True)
class Reading:
    """Samples of a service's state taken at each scrape, label values -> value (cheap database queries only).

    Read at scrape time, not counted as things happen, so they hold the stored truth across restarts.
    """

    name: str
    documentation: str
    kind: Literal["gauge", "counter"]
    labels: tuple[str, ...]
    read: Callable[[], Mapping[tuple[str, ...], float]]


class ServiceMetrics:
    """One service's registry: request counts and latency, its process (start time, CPU, memory), its readings.

    A registry of its own per app, so several apps in one process (tests, a local launcher) never share counts.
    """

    def __init__(self, service: str) -> None:
        """Request metrics and the process collector registered; the service's version as `hubnode_build_info`."""
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        Info("hubnode_build", "The service and the version running", registry=self.registry).info(
            {"service": service, "version": _version(service)}
        )
        self.requests = Counter(
            "hubnode_http_requests",
            "HTTP requests answered, by method, route template and status class",
            ("method", "route", "status_class"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "hubnode_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route template",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A counter of the service's own events in this registry (`name` without `_total`)."""
        return Counter(name, documentation, labels, registry=self.registry)

    def add_reading(self, reading: Reading) -> None:
        """Take `reading` at every scrape."""
        self.registry.register(_ReadingCollector(reading))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its time."""
        self.requests.labels(method, route, f"{status // 100}xx").inc()
        self.latency.labels(method, route).observe(seconds)

    def route(self) -> Route:
        """`GET /metrics`: the exposition of everything registered."""
        return Route("/metrics", self._exposition, methods=["GET"])

    async def _exposition(self, _request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, self.registry)  # readings query the database
        return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})


class RecordRequests:
    """ASGI middleware: every HTTP request counted and timed under the route template it matched.

    The template is found before the request is served, from the app's routes (`scope["app"]`), so what
    the handlers do to the scope does not matter; a request that raises is counted as a 5xx.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, then count it (the lifespan passes as it is)."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in METHODS else "other"
        route = route_template(getattr(scope.get("app"), "routes", ()), scope) or UNMATCHED
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self._app(scope, receive, sending)
        finally:
            self._metrics.observe(method, route, status, time.perf_counter() - started)


def route_template(routes: Sequence[BaseRoute], scope: Scope, prefix: str = "") -> str | None:
    """The template of the route that serves `scope` (a mount's prefix included), None when none does.

    A route that matches the path but not the method (405) still names the request.
    """
    partial = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        if isinstance(route, Mount):
            inner = route.routes
            found = route_template(inner, {**scope, **child}, prefix + route.path) if inner else None
            template = found if inner else f"{prefix}{route.path}/{{path:path}}"
        elif isinstance(route, Route):
            template = prefix + route.path
        else:
            continue
        if match is Match.FULL:
            return template
        partial = partial or template
    return partial


class _ReadingCollector(Collector):
    """A `Reading` as a collector; when the database does not answer, the scrape goes on without it."""

    def __init__(self, reading: Reading) -> None:
        self._reading = reading

    def describe(self) -> Iterable[Metric]:
        """The family without samples, so registering it reads nothing."""
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        """The family with its samples as read now."""
        try:
            samples = self._reading.read()
        except SQLAlchemyError as error:
            LOG.warning("metric %s not read: %s", self._reading.name, error)
            return []
        family = self._family()
        for labels, value in sorted(samples.items()):
            family.add_metric(list(labels), value)
        return [family]

    def _family(self) -> GaugeMetricFamily | CounterMetricFamily:
        kind = GaugeMetricFamily if self._reading.kind == "gauge" else CounterMetricFamily
        return kind(self._reading.name, self._reading.documentation, labels=self._reading.labels)


def _version(service: str) -> str:
    try:
        return version(f"hubnode-{service}")
    except PackageNotFoundError:
        return "unknown"
