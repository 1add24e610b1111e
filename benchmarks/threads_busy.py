"""A search's wall time by torch threads and OpenMP wait policy, alone and beside another CPU job.

Each cell runs ``raydnas search configs/quickstart.yaml`` (``--set epochs=E``, no TensorBoard) as
a fresh process, ``--reps`` times, and reports the median wall and CPU seconds. The other job is
one Python busy loop per ``--busy`` (a process that never sleeps, as another user's training
would be). ``ACTIVE`` is OpenMP's spinning wait (torch's default before raydnas set
``OMP_WAIT_POLICY=PASSIVE``); ``PASSIVE`` sleeps.

    python benchmarks/threads_busy.py --epochs 3 --reps 3 --out benchmarks/results/threads_busy.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_run(threads: int, policy: str, epochs: int) -> tuple[float, float]:
    env = dict(os.environ, OMP_WAIT_POLICY=policy)
    with tempfile.TemporaryDirectory() as d:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "raydnas", "search", "configs/quickstart.yaml",
                        "--out", d, "--threads", str(threads), "--set", f"epochs={epochs}",
                        "log.tensorboard=false", "log.print_every=0"],
                       cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1],
                    help="numbers of busy-loop processes beside the search")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for busy in args.busy:
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(busy)]
        try:
            for threads in (1, 2):
                for policy in ("ACTIVE", "PASSIVE"):
                    runs = [one_run(threads, policy, args.epochs) for _ in range(args.reps)]
                    row = {"busy_jobs": busy, "threads": threads, "omp_wait_policy": policy,
                           "wall_median_s": statistics.median(w for w, _ in runs),
                           "cpu_median_s": statistics.median(c for _, c in runs),
                           "walls_s": [round(w, 2) for w, _ in runs]}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            for h in hogs:
                h.kill()
                h.wait()
    result = {"machine": f"{platform.node()} {os.cpu_count()} CPUs {platform.processor()}",
              "date": time.strftime("%Y-%m-%d %H:%M"), "epochs": args.epochs,
              "load_before": os.getloadavg(), "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
