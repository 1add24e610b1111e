"""A sweep on a simulated multi-node cluster loses a worker node mid-sweep and still finishes.

The cluster (``ray.cluster_utils.Cluster``: a head that runs no trials and two 1-CPU workers)
runs in a subprocess so it never meets the session's local Ray.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

SCRIPT = r'''
import json, sys, threading, time
from pathlib import Path
import ray
from ray.cluster_utils import Cluster

storage, config = sys.argv[1], sys.argv[2]
cluster = Cluster(initialize_head=True,
                  head_node_args={"num_cpus": 0, "include_dashboard": False})
workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
cluster.wait_for_nodes()
exp = Path(storage) / "mn"
removed = {}

def reports(d):
    try:
        return len((d / "result.json").read_text().splitlines())
    except OSError:
        return 0

def remove_when_both_checkpointed():
    while True:
        dirs = list(exp.glob("*_seed*")) if exp.is_dir() else []
        if len(dirs) == 2 and all(reports(d) >= 1 for d in dirs):
            break
        time.sleep(0.2)
    removed["at"] = {d.name: reports(d) for d in dirs}
    cluster.remove_node(workers[1], allow_graceful=False)

threading.Thread(target=remove_when_both_checkpointed, daemon=True).start()
from raydnas.sweep import run_sweep
s = run_sweep(config, storage=storage, name="mn", reduce=False, quiet=True,
              address=cluster.address,  # the driver joins the running cluster
              overrides=["epochs=3", "sweep.methods=null", "sweep.max_failures=3"])
print("RESULT " + json.dumps({"done": s.done, "failed": s.failed, "total": s.total,
                              "removed": removed}), flush=True)
assert not ray.is_initialized()  # the driver disconnected; the cluster is still there
assert cluster.head_node is not None
cluster.shutdown()
'''


def test_worker_node_lost_mid_sweep_every_trial_finishes_all_epochs(tmp_path):
    script = tmp_path / "multinode.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(script), str(tmp_path),
                        str(ROOT / "configs" / "quickstart_sweep.yaml")],
                       env=env, capture_output=True, text=True, timeout=400)
    out = r.stdout + r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and line, out[-4000:]
    res = json.loads(line[-1][len("RESULT "):])
    assert res["removed"].get("at"), res  # the node really went away mid-sweep
    assert (res["done"], res["failed"], res["total"]) == (2, 0, 2), res
    dirs = sorted((tmp_path / "mn").glob("*_seed*"))
    assert len(dirs) == 2
    recovered = 0
    for d in dirs:
        epochs = [json.loads(ln)["epoch"] for ln in (d / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3]
        assert json.loads((d / "final.json").read_text())["complete"]
        recovered += (d / "error.txt").is_file()
        # Tune's own record of the reports: no epoch was computed twice (resumed, not restarted)
        reported = [json.loads(ln)["epoch"] for ln in (d / "result.json").read_text().splitlines()]
        assert reported == [1, 2, 3], (d.name, reported)
    assert recovered >= 1  # the trial on the lost node failed and was resumed elsewhere
