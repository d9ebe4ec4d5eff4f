"""`hubnode deploy`'s own parts: where the engine keeps things, what it is given, the volumes it prepares.

The engine run itself is the cluster tier's (`tests/cluster/`): it needs the built Pulumi CLI and a cluster.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from infra.deploy import (
    Deployment,
    Engine,
    PulumiPlaces,
    engine_env,
    ensure_passphrase,
    forget_own_cluster_stacks,
    host_volumes,
    keep_tokens,
    make_host_volumes,
    missing_secrets,
    plain_config,
)
from infra.errors import HubnodeError
from infra.plan import DB_UID, SERVICE_UID, plan_stack
from infra.spec import NAMESPACE, SECRET_KEYS, parse_stack
from infra.state import StackState
from tests.conftest import stack_config

CLUSTER = stack_config("cluster")


def test_the_passphrase_is_made_once_owner_only_and_then_kept(tmp_path: Path) -> None:
    path = ensure_passphrase(tmp_path / "stack" / "pulumi-passphrase")
    first = path.read_text()
    assert len(first) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_passphrase(path).read_text() == first


def test_the_engine_downloads_nothing_and_is_pointed_at_the_clusters_kubeconfig(tmp_path: Path) -> None:
    places = PulumiPlaces(tmp_path)
    env = engine_env(places, "cluster", tmp_path / "kubeconfig")
    assert env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "true"
    assert env["PULUMI_HOME"] == str(tmp_path / ".hubnode" / "pulumi" / "home")
    assert env["PULUMI_CONFIG_PASSPHRASE_FILE"] == str(tmp_path / ".hubnode" / "cluster" / "pulumi-passphrase")
    assert env["KUBECONFIG"] == str(tmp_path / "kubeconfig")
    assert "KUBECONFIG" not in engine_env(places, "cluster", None)
    assert places.backend == (tmp_path / ".hubnode" / "pulumi" / "state").as_uri()


def test_a_purged_cluster_takes_the_record_of_its_stacks_along_but_not_their_secrets_or_foreign_ones(
    tmp_path: Path,
) -> None:
    places = PulumiPlaces(tmp_path)
    (tmp_path / "Pulumi.cluster.yaml").write_text("config:\n  hubnode:platform: kubernetes\n")
    (tmp_path / "Pulumi.site.yaml").write_text("config:\n  kubernetes:kubeconfig: /etc/site/kubeconfig\n")
    records = tmp_path / ".hubnode" / "pulumi" / "state" / ".pulumi" / "stacks" / "hubnode"
    records.mkdir(parents=True)
    for stack in ("cluster", "site", "gone"):  # `gone`: its stack file was deleted; nothing says where it ran
        for suffix in (".json", ".json.bak", ".json.attrs"):
            (records / f"{stack}{suffix}").write_text("{}")
    locks = tmp_path / ".hubnode" / "pulumi" / "state" / ".pulumi" / "locks" / "organization" / "hubnode" / "cluster"
    locks.mkdir(parents=True)
    (locks / "b391c597.json").write_text("{}")  # left by a deploy that was stopped
    places.work_dir("cluster").mkdir(parents=True)
    (places.work_dir("cluster") / "Pulumi.cluster.yaml").write_text("encryptedkey: kept\n")
    assert places.deployed_stacks() == ["cluster", "gone", "site"]
    assert forget_own_cluster_stacks(places) == ["cluster"]
    assert places.state_files("cluster") == []
    assert len(places.state_files("site")) == len(places.state_files("gone")) == 3
    assert (places.work_dir("cluster") / "Pulumi.cluster.yaml").is_file(), "the secrets its volumes were made with"


def test_the_stack_files_config_goes_to_the_engine_as_text_and_structured_values_as_json() -> None:
    given = {"hubnode:site": "dic", "hubnode:nodes": [{"site": "dic"}], "hubnode:dbPassword": {"secure": "v1:x"}}
    config = plain_config(given)
    assert config == {"hubnode:site": "dic", "hubnode:nodes": '[{"site": "dic"}]'}
    assert json.loads(config["hubnode:nodes"]) == given["hubnode:nodes"]


def test_only_the_secrets_not_yet_set_are_made() -> None:
    every = [f"{NAMESPACE}:{key}" for key in SECRET_KEYS]
    assert missing_secrets(set()) == every
    assert missing_secrets({"hubnode:dbPassword", "hubnode:site"}) == every[1:]
    assert missing_secrets(set(every)) == []


def test_the_suites_tokens_are_kept_owner_only_per_node_from_the_stacks_secrets_and_nothing_else(
    tmp_path: Path,
) -> None:
    plans = plan_stack(parse_stack("cluster", CLUSTER))
    secrets = {key: f"value of {key}" for key in SECRET_KEYS}
    state = StackState(tmp_path, "cluster")
    kept = keep_tokens(state, plans, secrets)
    assert sorted(str(path.relative_to(state.folder / "secrets")) for path in kept) == [
        "dic/cn-admin-token",
        "dic/cn-reader-token",
        "dic/tc-admin-token",
        "practice/cn-admin-token",
        "practice/cn-reader-token",
    ]
    admin = state.secrets_dir("dic") / "cn-admin-token"
    assert admin.read_text() == "value of connectorAdminToken"
    assert stat.S_IMODE(admin.stat().st_mode) == 0o600
    assert stat.S_IMODE(admin.parent.stat().st_mode) == 0o700
    keep_tokens(state, plans, {**secrets, "connectorAdminToken": "rotated"})
    assert admin.read_text() == "rotated", "the Pulumi secret is the source: a changed one is copied again"


def test_each_volume_folder_belongs_to_the_user_of_the_service_writing_it() -> None:
    plans = plan_stack(parse_stack("cluster", CLUSTER))
    owners = host_volumes(plans, "/srv/v")
    assert owners[Path("/srv/v/hubnode-cluster-dic-db-data")] == DB_UID
    assert owners[Path("/srv/v/hubnode-cluster-dic-fhir-data")] == SERVICE_UID
    assert owners[Path("/srv/v/hubnode-cluster-practice-connector-data")] == SERVICE_UID
    assert len(owners) == sum(len(plan.volumes) for plan in plans)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_volume_folders_are_made_owner_only_and_an_existing_one_keeps_its_data(tmp_path: Path) -> None:
    kept = tmp_path / "a"
    kept.mkdir()
    (kept / "data").write_text("x")
    make_host_volumes({kept: 1000, tmp_path / "b": 999})
    assert (kept / "data").read_text() == "x"
    for folder, uid in ((kept, 1000), (tmp_path / "b", 999)):
        assert (folder.stat().st_uid, stat.S_IMODE(folder.stat().st_mode)) == (uid, 0o700)


def test_a_docker_stack_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    spec = parse_stack("dev", {"hubnode:site": "ukl"})
    engine = Engine(tmp_path / "bin" / "pulumi", tmp_path / "provider")
    deployment = Deployment(PulumiPlaces(tmp_path), spec, plan_stack(spec), {}, engine, None)
    with pytest.raises(HubnodeError, match="hubnode up --stack dev"):
        deployment.run("up", print)
    assert list(tmp_path.iterdir()) == []
