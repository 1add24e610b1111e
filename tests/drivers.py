"""Start a sweep driver as a user would, and SIGKILL it (and the local Ray it started) once the
study reaches a chosen point: the killed-driver tests of sweeps, races and S3 storage."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), e.g. the local Ray a driver started."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def sigkill_driver(driver: subprocess.Popen, log) -> None:
    """SIGKILL a sweep driver at once, then the local Ray it had started (its descendants), and
    close its log; also what a failed test leaves running."""
    tree = descendants(driver.pid) if driver.poll() is None else []
    if driver.poll() is None:
        os.kill(driver.pid, signal.SIGKILL)  # the driver dies at once
    driver.wait()
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    log.close()


def kill_driver_when(cmd: list[str], log_path: Path, ready: Callable[[], bool], *,
                     env: dict[str, str], cwd: Path | None = None, timeout: float = 240,
                     poll: float = 0.5, settle: float = 0.0) -> None:
    """Run ``cmd`` (a ``raydnas sweep`` driver) with its output in ``log_path``; once
    ``ready()`` holds, wait ``settle`` seconds (Tune snapshots in the background) and SIGKILL
    it and its local Ray. Fails, with the log's tail, if the driver ended before that."""
    log = open(log_path, "w")
    driver = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and driver.poll() is None:
            if ready():
                break
            time.sleep(poll)
        assert driver.poll() is None, log_path.read_text()[-3000:]
        time.sleep(settle)
    finally:
        sigkill_driver(driver, log)
