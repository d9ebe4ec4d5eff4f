"""HAPI's Prometheus metrics: on their own port inside the node, never on the FHIR port (README "Monitoring")."""

from __future__ import annotations

import docker
import httpx
import pytest

from infra.local import LocalLauncher
from infra.plan import HAPI_METRICS_PORT
from tests.integration.conftest import fhir_requests, node_plan, scrape_hapi

pytestmark = pytest.mark.usefixtures("built")


def test_hapi_counts_fhir_requests_on_its_metrics_port_and_the_fhir_port_has_no_metrics(
    launcher: LocalLauncher, client: docker.DockerClient
) -> None:
    plan = node_plan("itest-hapi-metrics")
    launcher.up([plan])
    [fhir] = plan.services
    container = client.containers.get(fhir.container_name)
    base = plan.endpoints["fhir"]

    before = scrape_hapi(container)
    for family in (
        "jvm_memory_used_bytes",
        "jvm_gc_pause_seconds",
        "jvm_threads_live_threads",
        "process_cpu_usage",
        "tomcat_threads_busy_threads",
        "hikaricp_connections_active",
    ):
        assert f"# TYPE {family} " in before, family
    searches = fhir_requests(before, operation="search-type", resource_type="Patient", outcome="2xx")

    assert httpx.get(f"{base}/Patient", params={"name": "Muster"}).status_code == 200
    assert httpx.get(f"{base}/NoSuchType", params={"id": "secret-42"}).status_code == 404

    after = scrape_hapi(container)
    assert fhir_requests(after, operation="search-type", resource_type="Patient", outcome="2xx") == searches + 1
    assert fhir_requests(after, resource_type="other", outcome="4xx") >= 1
    assert "Muster" not in after
    assert "secret-42" not in after
    assert "NoSuchType" not in after

    origin = base.removesuffix("/fhir")
    for path in ("/metrics", "/fhir/metrics"):
        assert httpx.get(f"{origin}{path}").status_code == 404, path
    published = {binding.container_port for binding in fhir.ports}
    assert HAPI_METRICS_PORT not in published
    assert f"{HAPI_METRICS_PORT}/tcp" not in (container.attrs["HostConfig"]["PortBindings"] or {})
