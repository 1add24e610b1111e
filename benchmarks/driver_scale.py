"""What a study of many trials costs the sweep driver: 50, 200, 800 (and 1600) tiny search trials.

Each trial is a real search as small as a search gets (tiny space, 2 channels, 3 cells (the
fewest the tiny space accepts), 1 epoch, batch 256, no fine-tuning, 64 BatchNorm images): ~0.5 s
of search, so what is measured is the driver's and Tune's cost per trial, not training. For each
size, in a fresh process (so the peak memory is that study's):

* ``wall_s``; the driver's own CPU time (user + sys, ``getrusage(RUSAGE_SELF)``: Ray's workers
  and raylet are other processes) and its peak RSS;
* the time from a trial's end to the next trial's start on the freed slot (median, p90), from
  the trials' ``result.json`` timestamps;
* the experiment-state snapshot Tune rewrites as trials finish: its size, and the time to
  parse and re-serialize it (median of 5; the part of a snapshot that grows with trials);
* ``raydnas reduce`` of the experiment in its own process: wall time and peak RSS, and the
  report's size;
* Optuna's ask + tell per point at the same number of points (TPE, the journal file storage
  the sweep uses, two parameters): median over the last 10 % of points;
* the checkpoint directories left in the experiment at the end (storage growth) and the
  1-minute load average before and after (other programs on the machine inflate the times).

Prints one JSON line per size, then a Markdown table and the driver CPU ratio between sizes, also
per doubling of trials (``ratio ** (1 / log2(n2 / n1))``). ``--out`` is rewritten after every
size, so a long run that is stopped keeps the sizes done. Usage::

    python benchmarks/driver_scale.py [--sizes 50 200 800 1600] [--epochs 1]
        [--out benchmarks/results/scale.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STUDY = {
    "space": "tiny", "epochs": 1, "seed": 0,
    "data": {"dataset": "digits", "batch_size": 256},
    "model": {"channels": 2, "cells": 3},
    "measure": {"tune_epochs": 0, "bn_images": 64, "samples": 1},
    "log": {"print_every": 0, "tensorboard": False, "histograms": False},
    "sweep": {"resources": {"cpu": 1}, "name": "scale"},
}


def _gaps(exp: Path) -> list[float]:
    """Per finished trial: seconds from its end to the next trial's start (the slot's gap)."""
    spans = []
    for r in exp.glob("*/result.json"):
        rows = [json.loads(x) for x in r.read_text().splitlines() if x.strip()]
        if rows:
            first, last = rows[0], rows[-1]
            spans.append((first["timestamp"] - first["time_total_s"], last["timestamp"]))
    starts = sorted(s for s, _ in spans)
    gaps = []
    for _, end in spans:
        nxt = [s for s in starts if s >= end]
        if nxt:
            gaps.append(nxt[0] - end)
    return gaps


def _snapshot(exp: Path) -> dict:
    f = max(exp.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    text = f.read_text()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        json.dumps(json.loads(text))
        times.append(time.perf_counter() - t0)
    return {"snapshot_bytes": len(text), "snapshot_serialize_ms": 1000 * statistics.median(times)}


def _reduce(exp: Path) -> dict:
    code = ("import json, resource, time\n"
            "from raydnas.reduce import reduce\n"
            "t = time.perf_counter(); reduce(%r)\n"
            "print(json.dumps({'s': time.perf_counter() - t,"
            " 'rss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))" % str(exp))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    rep = exp / "report"
    return {"reduce_s": r["s"], "reduce_rss_mb": r["rss"] / 1024,
            "report_md_bytes": (rep / "report.md").stat().st_size,
            "report_dir_bytes": sum(p.stat().st_size for p in rep.iterdir())}


def _optuna(points: int) -> dict:
    import optuna
    from optuna.distributions import FloatDistribution

    from raydnas.sweep.searcher import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as d:
        st = optuna.create_study(storage=open_storage(str(Path(d) / "o.journal")),
                                 study_name="s", sampler=optuna.samplers.TPESampler(seed=0))
        dists = {"optim.a_lr": FloatDistribution(1e-4, 1e-2, log=True),
                 "regularizer.rho": FloatDistribution(1e-3, 1.0, log=True)}
        times = []
        for _ in range(points):
            t0 = time.perf_counter()
            t = st.ask(fixed_distributions=dists)
            st.tell(t, -abs(t.params["optim.a_lr"] - 3e-3))
            times.append(time.perf_counter() - t0)
    tail = times[-max(1, points // 10):]
    return {"optuna_ask_tell_ms": 1000 * statistics.median(tail)}


def one(n: int, epochs: int = 1) -> dict:
    """One study of ``n`` trials in this process (a fresh one: its peak RSS is this study's)."""
    import yaml

    from raydnas.sweep import run_sweep

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as d:
        cfg = dict(STUDY, epochs=epochs, sweep=dict(STUDY["sweep"], seeds=n, storage=d))
        path = Path(d) / "scale.yaml"
        path.write_text(yaml.safe_dump(cfg))
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        s = run_sweep(path, reduce=False, quiet=True, num_cpus=2)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        exp = Path(d) / "scale"
        gaps = _gaps(exp)
        ckpts = sum(1 for c in exp.glob("*/checkpoint_*") if c.is_dir())
        out = {"trials": n, "epochs": epochs, "done": s.done, "wall_s": wall,
               "driver_cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
               "driver_peak_rss_mb": r1.ru_maxrss / 1024,
               "gap_median_s": statistics.median(gaps) if gaps else None,
               "gap_p90_s": (statistics.quantiles(gaps, n=10)[-1] if len(gaps) > 1 else None),
               **_snapshot(exp), "checkpoint_dirs": ckpts, **_reduce(exp), **_optuna(n),
               "load_avg_before": load_before, "load_avg_after": os.getloadavg()[0]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 800])
    ap.add_argument("--epochs", type=int, default=1, help="epochs per trial (default 1)")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help="also write the rows as a JSON list here")
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(one(a.one, a.epochs)), flush=True)
        return
    rows = []
    for n in a.sizes:  # each size in a fresh process: peak memory and Ray start are its own
        p = subprocess.run([sys.executable, __file__, "--one", str(n), "--epochs", str(a.epochs)],
                           capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if p.returncode != 0:
            sys.exit(p.stderr[-3000:])
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
        if a.out:
            Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    cols = [("trials", "{:d}"), ("wall_s", "{:.0f}"), ("driver_cpu_s", "{:.1f}"),
            ("driver_peak_rss_mb", "{:.0f}"), ("gap_median_s", "{:.2f}"), ("gap_p90_s", "{:.2f}"),
            ("snapshot_bytes", "{:,}"), ("snapshot_serialize_ms", "{:.1f}"),
            ("checkpoint_dirs", "{:d}"),
            ("reduce_s", "{:.1f}"), ("reduce_rss_mb", "{:.0f}"), ("report_md_bytes", "{:,}"),
            ("optuna_ask_tell_ms", "{:.1f}")]
    print("| " + " | ".join(c for c, _ in cols) + " |")
    print("|" + "---:|" * len(cols))
    for r in rows:
        print("| " + " | ".join("—" if r.get(c) is None else f.format(r[c]) for c, f in cols)
              + " |")
    for r0, r1 in zip(rows, rows[1:]):
        ratio = r1["driver_cpu_s"] / r0["driver_cpu_s"]
        per = ratio ** (1 / math.log2(r1["trials"] / r0["trials"]))
        print(f"driver CPU {r0['trials']} -> {r1['trials']} trials: {ratio:.2f}x, "
              f"{per:.2f}x per doubling (per trial {per / 2:.2f}x)")


if __name__ == "__main__":
    main()
