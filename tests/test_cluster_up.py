"""``ray up`` for real: cluster_local.yaml brought up over SSH on this machine, a study submitted
as a Ray job, stopped mid-run and continued by the same submit command, reduced, torn down.

The "machine" is a real sshd on 127.0.0.1:22 (``tests/sshbox.py``). The YAML is the file a user
gets with only what must differ changed: the IPs, the SSH user and key, and the one-box edit its
header documents (no workers, so the head runs the trials), plus free ports for the head where
Ray's defaults may be held by another Ray on this machine (``one_box_yaml``; ``ray dashboard``
then gets the head's ``--remote-port``). Every other command is the cluster section of docs/sweeps.md as
written, run by Ray's own CLI from the repository root, with ``raydnas wait-head``
(raydnas/cli/wait_head.py) between ``ray dashboard`` and the first ``ray job submit``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from sshbox import HOST, USER, SSHBox, control_dir, kill_matching, missing

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
EPOCHS = 6  # enough that a trial is mid-run when the stop lands, on a loaded box too
DASH = "http://127.0.0.1:8266"  # the docs' forwarded port (the head's own is a free one)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def one_box_yaml(box: SSHBox, dest: Path, ports: dict[str, int]) -> Path:
    """The user's cluster_local.yaml for one box; ``ports``: the head's ``ray start`` ports.

    The box has its own PID namespace but shares this machine's network with whatever other Ray
    runs here, so the head takes free ports instead of Ray's defaults: with the agent's 52365
    held by another Ray, the head's job agent never registers ("No available agent to submit
    job" for ever), and a dashboard that finds 8265 taken moves to 8266, leaving the forwarded
    port to reach another Ray.
    """
    raw = yaml.safe_load((ROOT / "cluster_local.yaml").read_text())
    raw["provider"].update(head_ip=HOST, worker_ips=[])
    raw["auth"] = {"ssh_user": USER, "ssh_private_key": str(box.key)}
    raw["min_workers"] = raw["max_workers"] = 0
    flags = " ".join(f"--{k}={v}" for k, v in ports.items() if k != "port")
    raw["head_start_ray_commands"] = [
        c.replace(" --num-cpus=0", "").replace("--port=6379", f"--port={ports['port']} {flags}")
        for c in raw["head_start_ray_commands"]]
    assert f"--port={ports['port']}" in " ".join(raw["head_start_ray_commands"])
    dest.write_text(yaml.safe_dump(raw, sort_keys=False))
    return dest


class Steps:
    """Runs CLI commands from the repository root and records how long each took."""

    def __init__(self, env: dict):
        self.env, self.took = env, {}

    def run(self, step: str, cmd: list[str], timeout: float = 300, check: bool = True):
        t = time.monotonic()
        r = subprocess.run(cmd, cwd=ROOT, env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        self.took[step] = round(time.monotonic() - t, 1)
        if check and r.returncode != 0:
            raise AssertionError(f"{step}: {' '.join(cmd)} exited {r.returncode}\n"
                                 f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r


def progress(exp: Path) -> dict[str, int]:
    """Epochs each trial has checkpointed so far, as the trial wrote them (its checkpoint's own
    record of the results it reported). Tune's result.json on storage lags by up to a snapshot
    period (it is copied with the experiment state), long enough for a short trial to finish."""
    out = {}
    for d in sorted(exp.glob("*_seed*")):
        n = 0
        for h in d.glob("checkpoint_*/raydnas_reported.json"):
            try:
                n = max(n, len(json.loads(h.read_text())))
            except (OSError, ValueError):  # being written or deleted by the keeper
                pass
        out[d.name] = n
    return out


def test_ray_up_job_submit_stop_continue_reduce_down(tmp_path):
    why = missing()
    if why:
        pytest.fail(why)
    bindir = str(Path(sys.executable).parent)
    laptop = tmp_path / "laptop"  # the user's home on the machine that runs `ray up`
    laptop.mkdir()
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", RAY_USAGE_STATS_ENABLED="0",
               HOME=str(laptop))
    env.pop("RAY_ADDRESS", None)
    storage = tmp_path / "sweeps"  # on one box the head's disk is the shared storage
    exp = storage / "quickstart_optuna"
    dashboard = None
    # the box's home holds the remote Ray's sockets: keep it short (AF_UNIX paths <= 107 bytes)
    with SSHBox(Path(tempfile.mkdtemp(prefix="rdbox-"))) as box:
        ports = {k: free_port() for k in ("port", "dashboard-port", "dashboard-agent-listen-port",
                                          "ray-client-server-port")}
        cfg = str(one_box_yaml(box, tmp_path / "cluster_local.yaml", ports))
        steps = Steps(env)
        try:
            # 0. the token you and every node share (file_mounts), then start the head
            steps.run("token", ["ray", "get-auth-token", "--generate"])
            token = (laptop / ".ray" / "auth_token").read_text().strip()
            steps.run("ray up", ["ray", "up", "-y", cfg], timeout=400)
            assert (box.home / ".ray" / "auth_token").read_text().strip() == token
            where = steps.run("synced copy", ["ray", "exec", cfg, "cd / && python -c 'import "
                              "raydnas; print(\"AT\", raydnas.__file__)'"]).stdout
            assert f"AT {box.home}/raydnas/raydnas/__init__.py" in where
            assert "optuna-dashboard" in steps.run("head setup", ["ray", "exec", cfg,
                                                  "pip show optuna-dashboard"]).stdout
            # 2. the forwarded job port, with token auth
            env["RAY_AUTH_MODE"] = "token"
            dashboard = subprocess.Popen(["ray", "dashboard", cfg, "--port", "8266",
                                          "--remote-port", str(ports["dashboard-port"])], cwd=ROOT,
                                         env=env, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
            # `ray up` returns before the head's job agent has registered: until it has, a submit
            # fails with "500: No available agent to submit job" (seen 31 s after `ray up` on a
            # loaded 2-core box). Wait until the forwarded port answers AND a job can be taken.
            steps.run("wait-head", [sys.executable, "-m", "raydnas.cli.wait_head", DASH,
                                    "--timeout", "240"], timeout=300)
            steps.env = dict(env, RAY_AUTH_TOKEN="0" * 32)
            wrong = steps.run("wrong token", ["ray", "job", "list", "--address", DASH], check=False)
            steps.env = env
            assert wrong.returncode != 0 and "Invalid authentication token" in wrong.stderr + wrong.stdout
            # 3. submit the study, stop it mid-run, submit the same command again
            submit = ["ray", "job", "submit", "--address", DASH, "--no-wait", "--",
                      "raydnas", "sweep", "~/raydnas/configs/quickstart_optuna.yaml",
                      "--address", "auto", "--storage", str(storage),
                      "--set", f"epochs={EPOCHS}", "optuna.n_trials=2", "sweep.seeds=1"]
            steps.run("submit", submit[:5] + ["--submission-id", "qo-1"] + submit[5:])
            deadline = time.monotonic() + 240
            while sum(n >= 1 for n in progress(exp).values()) < 2:
                assert time.monotonic() < deadline, f"no progress: {progress(exp)}"
                time.sleep(0.5)
            steps.run("job stop", ["ray", "job", "stop", "--address", DASH, "qo-1"])
            time.sleep(2)
            before = progress(exp)
            finished = {n for n, e in before.items() if e == EPOCHS}
            started = {n for n, e in before.items() if 0 < e < EPOCHS}
            assert started, f"nothing was mid-run when the job stopped: {before}"
            # the search's own record of each finished trial (Tune's result.json may lag)
            done_at = {n: (exp / n / "metrics.jsonl").read_bytes() for n in finished}
            # the trials say where they resume from (RAYDNAS_TRIAL_LOG=1: their log lines reach
            # the job's log through Ray's worker-to-driver forwarding)
            trial_log = json.dumps({"env_vars": {"RAYDNAS_TRIAL_LOG": "1"}})
            steps.run("submit again", submit[:5] + ["--submission-id", "qo-2",
                      "--runtime-env-json", trial_log] + submit[5:])
            logs = steps.run("job logs --follow", ["ray", "job", "logs", "--address", DASH,
                             "--follow", "qo-2"], timeout=400).stdout
            status = steps.run("job status", ["ray", "job", "status", "--address", DASH,
                               "qo-2"]).stdout
            assert "Job 'qo-2' succeeded" in status, logs[-3000:]
            assert "continuing the experiment" in logs
            # each trial stopped mid-run continued from its checkpoint, not from epoch 0
            resumed = re.findall(r"resuming from \S+ after epoch (\d+)/%d" % EPOCHS, logs)
            assert len(resumed) >= len(started), (before, logs[-3000:])
            assert all(int(k) >= 1 for k in resumed), resumed
            # the study as raydnas reads it: 4 trials, each complete with epochs 1..EPOCHS (Tune
            # appends again the results a restored trial reports that its saved state had not
            # seen; the reader keeps one row per epoch) and no trial started twice
            from raydnas.results.load import load_experiment

            trials = load_experiment(exp).trials
            assert [(t.status, [r["epoch"] for r in t.epochs]) for t in trials] \
                == [("complete", list(range(1, EPOCHS + 1)))] * 4, [t.path for t in trials]
            points = {(t.config["method"], t.config["point"]) for t in trials}
            assert len(points) == 4, points
            for d in exp.glob("*_seed*"):
                if d.name in {t.path.name for t in trials}:  # the search's own record: each epoch once
                    own = [json.loads(x)["epoch"] for x in (d / "metrics.jsonl").read_text().splitlines()]
                    assert own == list(range(1, EPOCHS + 1)), (d.name, own)
                else:  # a trial Tune had made but not started when the job stopped: left empty
                    assert not any(d.iterdir()), (d.name, list(d.iterdir()))
            for n in finished:  # finished trials were kept, not run again
                assert (exp / n / "metrics.jsonl").read_bytes() == done_at[n]
            # Optuna continued the same studies: 2 points per method, each told once
            import optuna
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend
            journal = JournalStorage(JournalFileBackend(str(exp / "optuna.journal")))
            names = optuna.get_all_study_names(journal)
            assert len(names) == 2
            for name in names:
                trials = optuna.load_study(study_name=name, storage=journal).trials
                assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"], name
            steps.run("ray status", ["ray", "exec", cfg, "ray status"])
            # 4. report from the shared storage, then tear down
            steps.run("reduce", ["raydnas", "reduce", str(exp)])
            assert (exp / "report" / "report.md").is_file()
            steps.run("ray down", ["ray", "down", "-y", cfg])
            left = box.processes()
            assert not [p for p in left if "ray" in p], left
        finally:
            if dashboard is not None:
                os.killpg(dashboard.pid, 9)
                dashboard.wait(10)
            box.close()  # ends whatever still runs on the box
            kill_matching(control_dir("raydnas-onprem"))  # ssh ControlMaster of Ray's runner
            print("ray up timings (s):", json.dumps(steps.took))
