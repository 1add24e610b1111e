"""Every cluster file passes Ray's own autoscaler validation (what `ray up` runs first)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from jsonschema import ValidationError
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
FILES = ["cluster.yaml", "cluster_local.yaml"]


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def check(raw: dict) -> dict:
    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)
    return cfg


@pytest.mark.parametrize("name", FILES)
def test_cluster_file_passes_ray_validation_and_installs_the_synced_copy(name):
    raw = load(name)
    cfg = check(raw)
    # the working copy is synced to every node and installed from there
    mounts = raw["file_mounts"]
    target = next(t for t, src in mounts.items() if src == ".")
    assert any(target in c and "pip install" in c for c in cfg["setup_commands"])
    # the same Ray token on your machine and every node (nodes without it cannot join)
    assert mounts["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert ".venv" in raw["rsync_exclude"] and "runs" in raw["rsync_exclude"]
    if name == "cluster.yaml":  # Ray's GPU image; on-prem nodes bring their own Python
        assert any("--shm-size" in o for o in raw["docker"]["run_options"])
    else:
        assert "docker" not in raw
    # the head runs no trials
    assert any("--num-cpus=0" in c for c in cfg["head_start_ray_commands"])


def test_aws_cluster_has_cpu_head_and_autoscaling_gpu_workers():
    cfg = check(load("cluster.yaml"))
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    workers = [t for n, t in types.items() if n != cfg["head_node_type"]]
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers)
    assert all(t["min_workers"] == 0 < t["max_workers"] for t in workers)  # scale from zero
    disks = [t["node_config"]["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] for t in types.values()]
    assert min(disks) >= 100


def test_validation_catches_mistakes_in_these_files():
    """Each mistake is rejected by Ray's schema validator itself (not by a KeyError on the way)."""
    raw = load("cluster.yaml")
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5  # fractional
    with pytest.raises(ValidationError, match="0.5 is not of type 'integer'"):
        check(bad)
    bad = copy.deepcopy(raw)
    bad["setup_comands"] = bad.pop("setup_commands")  # misspelled key
    with pytest.raises(ValidationError, match="'setup_comands' was unexpected"):
        check(bad)
    bad = copy.deepcopy(load("cluster_local.yaml"))
    bad["auth"]["ssh_usr"] = bad["auth"].pop("ssh_user", "me")  # misspelled key
    with pytest.raises(ValidationError, match="'ssh_usr' was unexpected"):
        check(bad)
    bad = copy.deepcopy(load("cluster_local.yaml"))
    bad["idle_timeout_minutes"] = -5
    with pytest.raises(ValidationError, match="less than the minimum"):
        check(bad)
