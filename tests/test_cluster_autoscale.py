"""Autoscaling with GPU-typed workers, on Ray's fake multi-node provider (``fake_multinode``,
``RAY_FAKE_CLUSTER=1``, the head started with ``ray start --autoscaling-config``).

A head with no trial resources and a worker type that advertises 2 CPUs and 1 GPU: a sweep whose
trials ask for ``gpu: 0.5`` makes the autoscaler start workers, every trial runs on a worker,
two trials share one worker's GPU, a worker's raylet killed by pid mid-sweep costs nothing but
retries from checkpoints, idle workers are removed afterwards, and a trial that holds a GPU on a
node whose CUDA is unusable fails at once with one line.

The fake GPUs are resources only: the first sweep runs with ``RAYDNAS_DEVICE=cpu`` in its job's
environment. The cluster runs in its own PID namespace (``unshare``): ``ray stop --force`` at its end
must not reach this session's Ray, and ending the namespace
leaves no process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

SCRIPT = r'''
import json, os, signal, subprocess, sys, threading, time
from pathlib import Path
import ray
from ray.util.state import list_actors

storage, config = sys.argv[1], sys.argv[2]
out = {"t": {}}
t0 = time.monotonic()
fake = {
    "cluster_name": "raydnas-fake", "max_workers": 2, "upscaling_speed": 1.0,
    "idle_timeout_minutes": 0.1,
    "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                 "disable_node_updaters": True, "disable_launch_config_check": True},
    "available_node_types": {
        "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
        "gpu_worker": {"resources": {"CPU": 2, "GPU": 1}, "node_config": {},
                       "min_workers": 0, "max_workers": 2}},
    "head_node_type": "ray.head.default", "auth": {}, "docker": {}, "file_mounts": {},
    "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
    "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
    "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
    "worker_start_ray_commands": []}
# where `ray up` leaves the cluster's config on a head (HOME is a temporary folder here)
boot = Path.home() / "ray_bootstrap_config.yaml"
boot.write_text(json.dumps(fake))
r = subprocess.run(["ray", "start", "--head", "--num-cpus=0", "--include-dashboard=true",
                    f"--autoscaling-config={boot}"],
                   env=dict(os.environ, AUTOSCALER_UPDATE_INTERVAL_S="1"),
                   capture_output=True, text=True)
assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
ray.init("auto", runtime_env={"env_vars": {"RAYDNAS_DEVICE": "cpu",
                                            "PYTHONPATH": os.environ["PYTHONPATH"]}})
head = ray.get_runtime_context().get_node_id()
out["t"]["head up"] = time.monotonic() - t0
out["workers_at_start"] = sum(n["Alive"] for n in ray.nodes()) - 1
seen = {"per_node": {}, "max_workers": 0, "killed": None}
stop = threading.Event()

def trials_alive():
    return [a for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True)
            if "ImplicitFunc" in (a.class_name or "")]

def watch():
    exp = Path(storage) / "as"
    while not stop.is_set():
        try:
            if seen["killed"] is None and exp.is_dir():
                # the trials' own checkpoints: Tune's result.json on storage lags by a
                # snapshot period (the checkpoint keeper), long enough for a trial to finish
                done = [d for d in exp.glob("*_seed*")
                        if any(d.glob("checkpoint_*/raydnas_reported.json"))]
            alive = trials_alive()
            nodes = [n for n in ray.nodes() if n["Alive"] and n["NodeID"] != head]
        except Exception:
            time.sleep(0.5); continue
        seen["max_workers"] = max(seen["max_workers"], len(nodes))
        per = {}
        for a in alive:
            per[a.node_id] = per.get(a.node_id, 0) + 1
        for n, k in per.items():
            seen["per_node"][n] = max(seen["per_node"].get(n, 0), k)
        # kill the raylet of the busiest worker once two trials have checkpointed an epoch
        if seen["killed"] is None and exp.is_dir():
            if len(done) >= 2 and per:
                busy = max(per, key=per.get)
                # a trial's worker process is a child of its node's raylet
                pid = next(a.pid for a in alive if a.node_id == busy)
                try:
                    ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
                    exe = open(f"/proc/{ppid}/cmdline", "rb").read().split(b"\0")[0]
                except OSError:  # the trial ended meanwhile
                    exe = b""
                if exe.endswith(b"/raylet"):
                    os.kill(ppid, signal.SIGKILL)
                    seen["killed"] = {"raylet_pid": ppid, "node": busy,
                                      "trials_there": per[busy], "checkpointed": len(done)}
        time.sleep(0.5)

threading.Thread(target=watch, daemon=True).start()
from raydnas.sweep import run_sweep
s = run_sweep(config, storage=storage, name="as", reduce=False, quiet=True,
              overrides=["epochs=4", "sweep.resources={cpu: 1, gpu: 0.5}",
                         "sweep.max_failures=3"])
stop.set()
out["t"]["sweep"] = time.monotonic() - t0 - out["t"]["head up"]
dead = [a for a in list_actors(detail=True, limit=10000) if "ImplicitFunc" in (a.class_name or "")]
out.update(done=s.done, failed=s.failed, total=s.total, seen=seen,
           trial_nodes=sorted({a.node_id for a in dead}), head=head)
# a trial holding a GPU where CUDA is unusable (no RAYDNAS_DEVICE=cpu this time)
ray.shutdown()
ray.init("auto", runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}})
t = time.monotonic()
g = run_sweep(config, storage=storage, name="nocuda", reduce=False, quiet=True,
              overrides=["epochs=1", "sweep.methods=null", "sweep.seeds=1",
                         "sweep.resources={cpu: 1, gpu: 0.5}", "sweep.max_failures=1"])
out["t"]["unusable CUDA"] = time.monotonic() - t
out["nocuda"] = {"failed": g.failed}
errs = list((Path(storage) / "nocuda").glob("*/error.txt"))
out["nocuda"]["error"] = errs[0].read_text() if errs else ""
# idle workers go away
t = time.monotonic()
while sum(n["Alive"] for n in ray.nodes()) > 1 and time.monotonic() - t < 120:
    time.sleep(1)
out["workers_after_idle"] = sum(n["Alive"] for n in ray.nodes()) - 1
out["t"]["idle workers removed"] = time.monotonic() - t
ray.shutdown()
print("RESULT " + json.dumps(out), flush=True)
subprocess.run(["ray", "stop", "--force"], stdout=subprocess.DEVNULL)
'''


def test_fake_multinode_gpu_workers_autoscale_pack_survive_a_raylet_kill_and_go_idle(tmp_path):
    if not shutil.which("unshare"):
        pytest.fail("this test needs util-linux's unshare (its own PID namespace)")
    script = tmp_path / "cluster.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Ray's socket paths must stay under the 107 bytes of AF_UNIX: a short folder, not tmp_path
    raytmp = tempfile.mkdtemp(prefix="rdfake-")
    bindir = str(Path(sys.executable).parent)
    env.update(PATH=f"{bindir}:{env['PATH']}", RAY_FAKE_CLUSTER="1", PYTHONPATH=str(ROOT),
               RAY_TMPDIR=raytmp, RAY_USAGE_STATS_ENABLED="0", HOME=str(tmp_path))
    r = subprocess.run(["unshare", "--pid", "--mount-proc", "--kill-child", sys.executable,
                        str(script), str(tmp_path / "sweeps"),
                        str(ROOT / "configs" / "quickstart_sweep.yaml")],
                       capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    shutil.rmtree(raytmp, ignore_errors=True)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, (r.returncode, r.stdout[-3000:], r.stderr[-5000:].replace("\\n", "\n"))
    res = json.loads(line[len("RESULT "):])
    print("fake multinode:", json.dumps(res))
    assert res["workers_at_start"] == 0  # nothing runs until trials ask for GPUs
    assert (res["done"], res["failed"], res["total"]) == (4, 0, 4)
    seen = res["seen"]
    assert seen["killed"] is not None, seen  # a worker was lost mid-sweep, and all finished
    assert seen["max_workers"] >= 1
    assert res["head"] not in res["trial_nodes"]  # never on the head
    assert max(seen["per_node"].values()) == 2  # gpu 0.5: two trials share one worker's GPU
    nc = res["nocuda"]
    assert nc["failed"] == 1
    assert "GPUUnusable" in nc["error"] and "cannot use CUDA there" in nc["error"]
    assert res["workers_after_idle"] == 0, res
