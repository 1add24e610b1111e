"""Ray's overhead on a sweep, and (with a GPU) searches per hour at 1, 2, 4 trials per GPU.

CPU (no GPU visible): runs the quickstart sweep in a fresh local Ray and compares its wall time
with the sum of its trials' search times (``epoch_seconds`` summed over epochs and trials)
divided by the number of trials that run at once. What is left is Ray's overhead: starting Ray
and trial actors, importing torch in each worker, loading data, checkpoint and artifact sync.

GPU: the same sweep with ``resources: {cpu: 1, gpu: 1/k}`` for k = 1, 2, 4 trials per GPU,
``2k`` trials each, reporting searches per hour.

Prints one JSON line.  Usage::

    python benchmarks/sweep.py [--config configs/quickstart_sweep.yaml] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_overhead(config: str, sets: list[str], cpus: int) -> dict:
    from raydnas.sweep import run_sweep

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        s = run_sweep(config, storage=d, name="bench", reduce=False, quiet=True, overrides=sets,
                      num_cpus=cpus)
        total = time.perf_counter() - t0
        trial_s = 0.0  # Tune's per-trial wall time (setup, epochs, checkpoints, reports)
        for r in Path(d, "bench").glob("*/result.json"):
            lines = r.read_text().splitlines()
            trial_s += json.loads(lines[-1])["time_total_s"] if lines else 0.0
    slots = min(cpus, s.total)
    ideal = s.search_seconds / slots
    return {"mode": "cpu", "trials": s.total, "done": s.done, "parallel": slots,
            "command_seconds": round(total, 2), "tuning_wall_seconds": round(s.wall_seconds, 2),
            "sum_search_seconds": round(s.search_seconds, 2),
            "sum_trial_seconds": round(trial_s, 2),
            "ideal_wall_seconds": round(ideal, 2),
            "overhead_seconds": round(s.wall_seconds - ideal, 2),
            "overhead_per_trial_seconds": round((s.wall_seconds - ideal) * slots / s.total, 2),
            "wall_over_ideal": round(s.wall_seconds / ideal, 2) if ideal else None,
            "load_average_1min": round(os.getloadavg()[0], 2)}


def gpu_throughput(config: str, sets: list[str]) -> dict:
    import ray

    from raydnas.sweep import run_sweep

    out = {"mode": "gpu", "per_gpu": {}}
    ray.init(include_dashboard=False)
    try:
        for k in (1, 2, 4):
            with tempfile.TemporaryDirectory() as d:
                s = run_sweep(config, storage=d, name=f"bench{k}", reduce=False, quiet=True,
                              overrides=sets + [f"sweep.resources.gpu={1 / k}",
                                                "sweep.resources.cpu=1", f"sweep.seeds={2 * k}",
                                                "sweep.methods=null"])
            out["per_gpu"][str(k)] = {"trials": s.total, "done": s.done,
                                      "wall_seconds": round(s.wall_seconds, 2),
                                      "searches_per_hour": round(3600 * s.done / s.wall_seconds, 1)}
    finally:
        ray.shutdown()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "quickstart_sweep.yaml"))
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    a = p.parse_args()
    import torch

    res = gpu_throughput(a.config, a.set) if torch.cuda.is_available() else \
        cpu_overhead(a.config, a.set, a.cpus)
    res["config"] = os.path.relpath(a.config, ROOT)
    res["cpus"] = a.cpus
    print(json.dumps(res))


if __name__ == "__main__":
    main()
