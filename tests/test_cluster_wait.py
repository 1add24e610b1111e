"""``raydnas wait-head`` (raydnas/cli/wait_head.py): wait until a cluster's job API takes a job.

The fast tests start no Ray: an address where nothing listens, and one that accepts a connection
and never answers, must each end in the one-line timeout message within the timeout. The slow
test starts a real local Ray head with its dashboard (``ray start --head --block`` in its own PID
namespace, on free ports, with token auth), runs the wait at once, and then ``ray job submit``
must succeed at the first try, and the probe leaves no job behind (the real-job fallback for
older Rays runs a job ``true``); a wrong or missing token fails the wait at once with one line. A second slow test holds the agent's port, as another
Ray on the same machine does, and the wait must end with the message that says so.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from raydnas.cli.wait_head import HeadNotReady, main, wait_for_job_agent

ROOT = Path(__file__).resolve().parents[1]


def _bound_port(listen: bool = False, host: str = "127.0.0.1") -> socket.socket:
    """A socket on a free port: bound only (connections refused) or listening."""
    s = socket.socket()
    s.bind((host, 0))
    if listen:
        s.listen(8)  # the kernel completes the handshake; nobody ever accepts or answers
    return s


def _free_port() -> int:
    with _bound_port() as s:
        return s.getsockname()[1]


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_nothing_listens_one_line_timeout_and_exit_1(capsys):
    with _bound_port() as s:
        address = f"http://127.0.0.1:{s.getsockname()[1]}"
        t = time.monotonic()
        with pytest.raises(HeadNotReady) as e:
            wait_for_job_agent(address, timeout_s=3, poll_s=0.5, log=None)
        took = time.monotonic() - t
        msg = str(e.value)
        assert 2.5 < took < 8, took
        assert "\n" not in msg
        assert msg.startswith(f"{address}: the Ray job API could not take a job after 3 s")
        assert "last answer: nothing answered (connection failed)" in msg
        assert "ray dashboard CLUSTER.yaml --port PORT" in msg  # what to do
        assert f"raydnas wait-head {address} --timeout 60" in msg

        assert main([address, "--timeout", "1"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith(f"error: {address}: "), err


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_an_answer_that_never_comes_does_not_outlive_the_timeout():
    with _bound_port(listen=True) as s:
        address = f"http://127.0.0.1:{s.getsockname()[1]}"
        t = time.monotonic()
        with pytest.raises(HeadNotReady) as e:
            wait_for_job_agent(address, timeout_s=2, poll_s=0.5, log=None)
        assert time.monotonic() - t < 5
        assert "last answer: no answer (the request was still pending at the deadline)" in str(e.value)


def test_importing_the_command_does_not_import_ray():
    code = ("import sys, argparse, raydnas.cli.wait_head as w; "
            "w.add_parser(argparse.ArgumentParser().add_subparsers()); "
            "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


@contextlib.contextmanager
def local_head(tmp_path: Path, agent_port: int | None = None):
    """A real Ray head with its dashboard on free ports and token auth: ``(address, env)``.

    ``ray stop`` would stop every Ray of this machine: the head lives in its own PID namespace
    (``ray start --block`` under ``unshare``), and killing unshare (it ignores SIGTERM while it
    waits) ends all of it. The network is shared, so every port Ray would pick by default is a
    free one here (another Ray on this machine may hold the defaults).
    """
    if not shutil.which("unshare"):
        pytest.fail("this test needs util-linux's unshare (the head in its own PID namespace)")
    bindir = str(Path(sys.executable).parent)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env.update(PATH=f"{bindir}:{env['PATH']}", HOME=str(home), RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    # Ray's socket paths must stay under the 107 bytes of AF_UNIX: a short folder, not tmp_path
    raytmp = tempfile.mkdtemp(prefix="rdw-")
    ports = {f"--{k}": _free_port() for k in (
        "port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
        "metrics-export-port", "runtime-env-agent-port", "ray-client-server-port",
        "node-manager-port", "object-manager-port")}
    if agent_port is not None:
        ports["--dashboard-agent-listen-port"] = agent_port
    with open(tmp_path / "head.log", "w") as log:
        head = subprocess.Popen(
            ["unshare", "--pid", "--mount-proc", "--kill-child", "ray", "start", "--head",
             "--block", "--include-dashboard=true", "--num-cpus=1", f"--temp-dir={raytmp}",
             "--disable-usage-stats", *(f"{k}={v}" for k, v in ports.items())],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{ports['--dashboard-port']}", env
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # unshare: --kill-child ends the whole namespace
        head.wait(30)
        shutil.rmtree(raytmp, ignore_errors=True)


def wait_head(address: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raydnas.cli.wait_head", address,
                           "--timeout", str(timeout)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout + 60)


@pytest.mark.slow
def test_real_head_wait_then_the_first_submit_succeeds(tmp_path):
    took = {}
    with local_head(tmp_path) as (address, env):
        t = time.monotonic()
        w = wait_head(address, env, 240)  # run at once: the head is still starting
        took["wait"] = round(time.monotonic() - t, 1)
        assert w.returncode == 0, (w.stdout, w.stderr, (tmp_path / "head.log").read_text()[-3000:])
        assert re.search(rf"wait-head: {address}: ready for jobs after [\d.]+ s", w.stdout), w.stdout

        t = time.monotonic()
        sub = subprocess.run(["ray", "job", "submit", "--address", address,
                              "--submission-id", "first-try", "--", "echo", "submitted-ok"],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
        took["submit"] = round(time.monotonic() - t, 1)
        assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-3000:]
        assert "Job 'first-try' succeeded" in sub.stdout + sub.stderr, sub.stdout[-3000:]
        listed = subprocess.run(["ray", "job", "list", "--address", address], env=env,
                                capture_output=True, text=True, timeout=60)
        assert listed.stdout.count("submission_id=") == 1, listed.stdout  # the probe left no job
        # the fallback for Rays without label selectors: a real job `true`, waited for
        t = time.monotonic()
        fb = subprocess.run([sys.executable, "-c", "import sys; from raydnas.cli.wait_head import "
                             "probe; print(probe(sys.argv[1], how='job'))", address], env=env,
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
        took["real-job probe"] = round(time.monotonic() - t, 1)
        assert "(True, 'the job agent ran a probe job `true`: SUCCEEDED')" in fb.stdout, (
            fb.stdout, fb.stderr[-2000:])

        # a token problem is no reason to wait: one line and exit 1 at once
        for name, over, says in (
                ("wrong token", {"RAY_AUTH_TOKEN": "0" * 32}, "refused the token"),
                ("no token mode", {"RAY_AUTH_MODE": "disabled"}, "export RAY_AUTH_MODE=token")):
            t = time.monotonic()
            bad = wait_head(address, dict(env, **over), 120)
            took[name] = round(time.monotonic() - t, 1)
            err = bad.stderr.strip()
            assert bad.returncode == 1 and took[name] < 30, (bad.stdout, err)
            assert err.count("\n") == 0 and err.startswith(f"error: {address}: the head "), err
            assert says in err, err
    print("wait-head timings (s):", took)


@pytest.mark.slow
def test_an_agent_whose_port_is_taken_never_registers_and_the_message_says_so(tmp_path):
    """What this shared machine did to the ray up test: another Ray held port 52365."""
    with _bound_port(listen=True, host="0.0.0.0") as taken, \
            local_head(tmp_path, agent_port=taken.getsockname()[1]) as (address, env):
        w = wait_head(address, env, 45)
    err = w.stderr.strip()
    assert w.returncode == 1 and err.count("\n") == 0, (w.stdout, err)
    assert "last answer: HTTP 500: No available agent to submit job" in err, err
    assert "Failed to bind to port" in err and "--dashboard-agent-listen-port" in err, err
