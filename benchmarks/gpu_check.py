"""The GPU check: one JSON file of what raydnas's search step costs on one GPU.

* ``steps``: s/step (median) and peak CUDA memory of the plain fp32 path (``reference.py``,
  NCHW) and of ours fp32 NCHW, fp32 channels_last (the default), channels_last with fused ops
  (``speed.fuse``) and bf16 autocast, for the DARTS and NB201 spaces at batch 64. CUDA graphs
  are not attempted: the step's set of kernels changes with α (zero, pruned and sampled ops are
  skipped), which a captured graph cannot follow.
* ``packing``: searches per hour at 1, 2 and 4 trials per GPU, each trial holding 1/k of the GPU
  through Ray's fractional GPUs (a real ``raydnas sweep`` of k seeds, 1 epoch each).
* ``alpha_update``: one first-order search step in float64 on the CPU and on the GPU from the
  same state and batch: max |Δα| and whether α agrees bit for bit.

``--dry-run`` runs the same code on the CPU with tiny sizes (the tiny spaces, batch 8, 2 timed
steps, 1 and 2 trials per "device" with one CPU each), in about a minute: what CI runs.

    bash benchmarks/gpu_check.sh                 # on a GPU machine, < 8 minutes
    bash benchmarks/gpu_check.sh --dry-run --out /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
from step import Feeder, build_state, make_config, synthetic_data  # noqa: E402

VARIANTS = ("plain_fp32", "ours_fp32_nchw", "ours_fp32", "ours_fused", "ours_bf16")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_variant(space: str, variant: str, dev: torch.device, batch: int, channels: int,
                 steps: int, warmup: int) -> dict:
    """Median s/step and peak memory of one variant of the first-order search step."""
    from reference import reference_step

    from raydnas.search.run import train_step

    extra = ["speed.fuse=true"] if variant == "ours_fused" else []
    cfg = make_config(space, "darts_v1", batch, channels, None, extra)
    data = synthetic_data(max(64, 4 * batch))
    st = build_state(cfg, dev, data)
    st.steps_per_epoch = 1000
    feed = Feeder(data, batch, dev)
    step = train_step
    if variant in ("plain_fp32", "ours_fp32_nchw"):
        st.model.to(memory_format=torch.contiguous_format)
    if variant == "plain_fp32":
        step = reference_step
    ctx = (torch.autocast(dev.type, dtype=torch.bfloat16) if variant == "ours_bf16"
           else contextlib.nullcontext())
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    try:
        for i in range(warmup + steps):
            b = feed.train_batch()
            _sync(dev)
            t = time.perf_counter()
            with ctx:
                step(st, b, feed)
            _sync(dev)
            if i >= warmup:
                times.append(time.perf_counter() - t)
    except Exception as e:  # noqa: BLE001 - a variant that cannot run is reported, not fatal
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    peak = torch.cuda.max_memory_allocated(dev) / 1e9 if dev.type == "cuda" else None
    return {"median_s": round(statistics.median(times), 5), "timed_steps": len(times),
            "peak_cuda_gb": None if peak is None else round(peak, 3)}


def alpha_update(space: str, dev: torch.device, batch: int, channels: int) -> dict:
    """One float64 step on the CPU and on ``dev`` from one state and batch: α compared."""
    from raydnas.search.run import train_step

    cfg = make_config(space, "darts_v1", batch, channels, None)
    data = synthetic_data(max(64, 4 * batch))
    out = {}
    for where, d in (("cpu", torch.device("cpu")), ("device", dev)):
        st = build_state(cfg, d, data)
        st.model.double()
        st.steps_per_epoch = 1000
        feed = Feeder(data, batch, d)
        x, y = feed.train_batch()
        val = feed.next()

        class Val:
            def next(self):
                return val[0].double(), val[1]

        train_step(st, (x.double(), y), Val())
        out[where] = {c: a.detach().cpu() for c, a in st.model.alphas.items()}
    diff = max(float((out["cpu"][c] - out["device"][c]).abs().max()) for c in out["cpu"])
    same = all(torch.equal(out["cpu"][c], out["device"][c]) for c in out["cpu"])
    return {"devices": ["cpu", str(dev)], "dtype": "float64", "max_abs_diff": diff,
            "bitwise_equal": same}


def packing(ks: list[int], dry: bool, gpus: int) -> dict:
    """Searches per hour with k trials sharing one device (Ray fractional GPUs)."""
    import ray
    import yaml

    from raydnas.sweep import run_sweep

    out = {}
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=os.cpu_count() or 1, num_gpus=gpus, include_dashboard=False,
                 log_to_driver=False)
    try:
        for k in ks:
            with tempfile.TemporaryDirectory(prefix="raydnas-gpu-check-") as tmp:
                cfg = {
                    "space": "tiny201" if dry else "nb201", "epochs": 1,
                    "data": {"dataset": "digits", "batch_size": 32 if dry else 64},
                    "model": {"channels": 4 if dry else 16},
                    "log": {"tensorboard": False, "print_every": 0},
                    "measure": {"tune_epochs": 0},
                    "sweep": {"seeds": k, "name": f"pack{k}", "storage": tmp,
                              "resources": ({"cpu": 1} if dry else
                                            {"cpu": max(1, (os.cpu_count() or 1) // k),
                                             "gpu": 1.0 / k})},
                }
                path = Path(tmp) / "study.yaml"
                path.write_text(yaml.safe_dump(cfg))
                t = time.perf_counter()
                s = run_sweep(path, reduce=False, quiet=True)
                wall = time.perf_counter() - t
                out[str(k)] = {"trials": k, "done": s.done, "wall_s": round(wall, 2),
                               "searches_per_hour": round(s.done / wall * 3600, 1)}
    finally:
        if started:
            ray.shutdown()
    base = out[str(ks[0])]["searches_per_hour"]
    for v in out.values():
        v["vs_one_trial"] = round(v["searches_per_hour"] / base, 2) if base else None
    return out


def main(argv: list[str] | None = None) -> dict:
    """Run the check and write the JSON file."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (CI)")
    ap.add_argument("--out", default=str(HERE / "results" / "gpu_check.json"))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--skip-packing", action="store_true")
    a = ap.parse_args(argv)
    dry = a.dry_run
    if not dry and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device visible (use --dry-run for the CPU check)")
    dev = torch.device("cpu" if dry else "cuda")
    torch.set_num_threads(2 if dry else max(1, (os.cpu_count() or 2) // 2))
    spaces = {"darts": "tiny", "nb201": "tiny201"} if dry else {"darts": "darts",
                                                                "nb201": "nb201"}
    batch, channels = (8, 4) if dry else (64, 16)
    steps = a.steps or (2 if dry else 10)
    t0 = time.perf_counter()
    res: dict = {"dry_run": dry, "device": torch.cuda.get_device_name(0) if not dry else "cpu",
                 "batch": batch, "channels": channels, "torch": torch.__version__,
                 "python": platform.python_version(), "steps": {}}
    for name, space in spaces.items():
        res["steps"][name] = {"space": space}
        for v in VARIANTS:
            res["steps"][name][v] = time_variant(space, v, dev, batch, channels, steps,
                                                 1 if dry else 3)
        plain = res["steps"][name]["plain_fp32"].get("median_s")
        for v in VARIANTS[1:]:
            m = res["steps"][name][v].get("median_s")
            if plain and m:
                res["steps"][name][v]["speedup_vs_plain"] = round(plain / m, 2)
    res["alpha_update"] = alpha_update(spaces["nb201"], dev, 8, 4)
    if not a.skip_packing:
        res["packing"] = packing([1, 2] if dry else [1, 2, 4], dry, 0 if dry else 1)
    res["cuda_graphs"] = ("not attempted: the step's kernels change with α (zero, pruned and "
                          "sampled ops are skipped), which a captured graph cannot follow")
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
