"""`hubnode cluster up` runs a project image behind a Service, and `hubnode cluster down` leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from infra import cluster
from infra.bootstrap import ensure_base_image, ensure_docker_engine
from infra.cluster_files import layout_for
from infra.imagebuild import build_image, images_to_build
from infra.plan import plan_stack
from infra.progress import Progress
from infra.stackfile import load_stack
from tests.conftest import PROJECT_DIR

SERVICE_IP = "10.96.0.200"
NAMESPACE = "hubnode-cluster-test"
PAGE = "hubnode cluster tier"
#: The gateway image's nginx as its own user, answering a health check and one page.
NGINX_CONF = f"""\
pid /tmp/nginx.pid;
error_log stderr;
events {{}}
http {{
  access_log off;
  client_body_temp_path /tmp/body;
  proxy_temp_path /tmp/proxy;
  fastcgi_temp_path /tmp/fastcgi;
  uwsgi_temp_path /tmp/uwsgi;
  scgi_temp_path /tmp/scgi;
  server {{
    listen 8088;
    location = /health {{ return 200 "ok\\n"; }}
    location / {{ return 200 "{PAGE}\\n"; }}
  }}
}}
"""


def _hubnode(project: Path, *args: str) -> float:
    """Run the real CLI; its seconds."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "infra.cli", "--project-dir", str(project), *args], check=True)
    return time.monotonic() - started


def _gateway_image() -> str:
    """The federation stack's gateway image, built in Docker if missing (the smallest image the project builds)."""
    plans = plan_stack(load_stack(PROJECT_DIR, "federation"))
    wanted = next(s.image.reference for p in plans for s in p.services if s.component == "gateway")
    client = ensure_docker_engine(Progress())
    for image in images_to_build(plans):
        if image.reference == wanted:
            ensure_base_image(client, Progress(), image.build.base_image)
            build_image(client, image, Progress())
    return wanted


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A scratch project folder (so a developer's own cluster state is not touched), with its cluster up."""
    folder = tmp_path_factory.mktemp("cluster-project")
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", folder / "Pulumi.yaml")
    left = cluster.leftovers(layout_for(folder))
    assert not left, f"a cluster runs already: {left}"
    try:
        print(f"cluster up: {_hubnode(folder, 'cluster', 'up'):.1f} s", file=sys.stderr)
        yield folder
    finally:
        print(f"cluster down: {_hubnode(folder, 'cluster', 'down', '--purge'):.1f} s", file=sys.stderr)


def _manifests(image: str) -> list[dict[str, object]]:
    labels = {"app": "web"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "web", "namespace": NAMESPACE},
            "data": {"nginx.conf": NGINX_CONF},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "containers": [
                            {
                                "name": "gateway",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "ports": [{"containerPort": 8088}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/health", "port": 8088},
                                    "periodSeconds": 2,
                                },
                                "volumeMounts": [{"name": "conf", "mountPath": "/etc/hubnode", "readOnly": True}],
                            }
                        ],
                        "volumes": [{"name": "conf", "configMap": {"name": "web"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": NAMESPACE},
            "spec": {"clusterIP": SERVICE_IP, "selector": labels, "ports": [{"port": 80, "targetPort": 8088}]},
        },
    ]


def test_a_project_image_serves_through_a_service_and_down_leaves_nothing(project: Path, tmp_path: Path) -> None:
    layout = layout_for(project)
    found = cluster.status(project)
    assert found["node"] == {"name": "localhost", "ready": True}

    again = _hubnode(project, "cluster", "up")
    print(f"cluster up, already running: {again:.1f} s", file=sys.stderr)

    running = cluster.existing(project)
    image = _gateway_image()
    cluster.import_images(running, [image], Progress())
    manifest = tmp_path / "web.yaml"
    manifest.write_text(yaml.safe_dump_all(_manifests(image)))
    running.kubectl("apply", "-f", str(manifest))
    running.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/web", "--timeout=180s", timeout=200)

    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://{SERVICE_IP}/", timeout=3) as answer:
                assert answer.read().decode().strip() == PAGE
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)

    _hubnode(project, "cluster", "down")
    assert cluster.leftovers(layout) == []
    assert not any(p["running"] for p in cluster.status(project)["processes"].values())  # type: ignore[attr-defined]


def test_down_leaves_nothing_when_the_kubelet_died_under_a_running_pod(project: Path) -> None:
    """Without a kubelet no CNI DEL runs: down removes the sandboxes, their network namespaces and CNI results."""
    cni_results = Path("/var/lib/cni/results")
    before = set(cni_results.glob("*"))
    _hubnode(project, "cluster", "up")
    running = cluster.existing(project)
    running.kubectl("run", "idle", "--image=registry.k8s.io/pause:3.10", "--image-pull-policy=Never")
    running.kubectl("wait", "--for=condition=Ready", "pod/idle", "--timeout=60s", timeout=90)
    kubelet = cluster.running_pid(running.layout, next(p for p in running.processes if p.name == "kubelet"))
    assert kubelet is not None
    os.kill(kubelet, signal.SIGKILL)

    _hubnode(project, "cluster", "down")
    assert cluster.leftovers(running.layout) == []
    assert set(cni_results.glob("*")) <= before
