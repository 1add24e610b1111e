"""Seconds per search step and peak memory, raydnas's step against a plain reference step.

One step is what the first speed issue's reference table times: a first-order α step (forward,
backward, Adam) and a weight step (forward, backward, clip 5, SGD), batch 16 of 3×32×32 random
images, C = 16. "ours" drives the project's real ``SearchState`` and ``train_step``
with the method's axes (``--method``: a preset ``configs/NAME.yaml`` or ``axis=name,...``).
``--reference`` also
runs ``benchmarks/reference.py``: the plain quark0/darts step (every op, ``none`` included, as
``w·op(x)``; α gradient from a full backward; always first order, with the method's op weights;
for ``gumbel_hard`` only the sampled op per edge, as AutoDL-Projects' GDAS).
``--also METHOD`` times our step with another method (unrolled against first order) and
``--baseline DIR`` our step from another checkout (the effect of a change).

Each runs in its own process (so each has its own peak RSS) and their steps are interleaved one
by one, so that load from other programs on a shared machine hits all alike: compare medians of
one run, not figures across runs. Prints one JSON line::

    PYTHONPATH=. python benchmarks/step.py --space darts --method darts --reference
    PYTHONPATH=. python benchmarks/step.py --space nb201 --method gdas --reference
    PYTHONPATH=. python benchmarks/step.py --space nb201 --method darts_v2 --also darts_v1
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time

#: the first speed issue's reference table: (implementation, s/step median, peak RSS GB),
#: 2 threads, batch 16
ISSUE_REFERENCE = {
    ("darts", "first_order"): ("quark0/darts", 3.96, 2.63),
    ("nb201", "first_order"): ("AutoDL-Projects DARTS", 0.616, 0.95),
    ("nb201", "gdas"): ("AutoDL-Projects GDAS", 0.151, None),
}

#: method presets when the checkout has no ``configs/<name>.yaml`` of that name
PRESETS = {
    "darts": [],
    "darts_v1": [],
    "darts_v2": ["gradient=unrolled"],
    "gdas": ["activation=gumbel_hard"],
    "idarts": ["gradient=implicit"],
}
AXES = ("activation", "gradient", "schedule", "regularizer")
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def method_axes(method: str) -> dict:
    """``--method``: a preset (``configs/<name>.yaml``: only its four method axes are taken) or
    axes like ``activation=softmax,gradient=first_order,gradient.K=2``."""
    import yaml

    from raydnas.config.experiment import apply_overrides

    path = method if method.endswith((".yaml", ".yml")) else \
        os.path.join(CONFIGS, method + ".yaml")
    if os.path.isfile(path):
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
        return {a: raw[a] for a in AXES if a in raw}
    if method in PRESETS:
        return apply_overrides({}, PRESETS[method], "--method")
    if "=" not in method:
        raise SystemExit(f"--method {method!r}: a preset (configs/*.yaml, {', '.join(PRESETS)}) "
                         "or axes like activation=softmax,gradient=first_order")
    return apply_overrides({}, [p.strip() for p in method.split(",") if p.strip()], "--method")


def make_config(space: str, method: str, batch: int, channels: int, cells: int | None,
                extra: list[str] = ()):
    from raydnas.config.experiment import apply_overrides, from_dict

    raw = {"space": space, "epochs": 50, "seed": 0, "data": {"batch_size": batch},
           "model": {"channels": channels}, "log": {"tensorboard": False, "print_every": 0},
           **method_axes(method)}
    if cells:
        raw["model"]["cells"] = cells
    raw = apply_overrides(raw, list(extra), "--set")
    return from_dict(raw, "benchmarks/step.py")


def synthetic_data(n: int = 256, seed: int = 0, size: int = 32):
    """``n`` random 3×size×size images with 10 random labels, as a raydnas Dataset."""
    import torch

    from raydnas.data.datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Dataset("synthetic", (x, y), 10, 3)


def build_state(cfg, device, dataset):
    """A real ``SearchState`` fed ``dataset`` (synthetic images) instead of ``cfg.data``."""
    from raydnas.search.run import SearchState

    return SearchState(cfg, device, dataset=dataset)


class Feeder:
    """Train batches and a persistent val cycle over the synthetic set, on ``device``."""

    def __init__(self, dataset, batch: int, device, seed: int = 0) -> None:
        from raydnas.data.datasets import Batches, Cycle

        n = len(dataset)
        half = list(range(n // 2))
        self.train = Batches(dataset, half, batch, seed, True)
        self.val = Cycle(Batches(dataset, list(range(n // 2, n)), batch, seed + 1, True))
        self.device, self._it, self._pass = device, None, 0

    def next(self):  # the val side (what train_step calls)
        x, y = self.val.next()
        return x.to(self.device), y.to(self.device)

    def train_batch(self):
        if self._it is None:
            self._it = self.train.iterate(self._pass)
        try:
            x, y = next(self._it)
        except StopIteration:
            self._pass += 1
            self._it = None
            return self.train_batch()
        return x.to(self.device), y.to(self.device)


def _worker(conn, kind: str, args: dict) -> None:
    if kind == "baseline":  # another raydnas checkout, e.g. to measure one lever
        sys.path.insert(0, os.path.abspath(args["baseline"]))
    import torch

    torch.set_num_threads(args["threads"])
    from raydnas.search.run import resolve_device, train_step

    dev = resolve_device(args["device"])
    t0 = time.perf_counter()
    also = kind.startswith("also")
    method = args["also"][int(kind[4:])] if also else args["method"]
    cfg = make_config(args["space"], method, args["batch"], args["channels"], args["cells"],
                      [] if also else args["set"])
    data = synthetic_data(max(64, 4 * args["batch"]))
    st = build_state(cfg, dev, data)
    st.steps_per_epoch = 100
    feed = Feeder(data, args["batch"], dev)
    if kind == "reference":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from reference import reference_step

        # GDAS's plain implementation (AutoDL-Projects) runs only the sampled op of each edge
        one_op = cfg.axes["activation"].name == "gumbel_hard"

        def step(st, batch, val):
            return reference_step(st, batch, val, one_op=one_op)

        # the plain implementations (quark0/darts, AutoDL) run NCHW
        st.model.to(memory_format=torch.contiguous_format)
    else:
        step = train_step
    build_s = time.perf_counter() - t0
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    conn.send(("ready", build_s))
    rss = None
    while True:
        cmd = conn.recv()
        if cmd == "step":
            batch = feed.train_batch()
            sync()
            t, c = time.perf_counter(), time.process_time()
            step(st, batch, feed)
            sync()
            conn.send((time.perf_counter() - t, time.process_time() - c))
        elif cmd == "profile":  # the profiler's own memory must not count: peak taken first
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
            conn.send(_profile(step, st, feed, args["profile"]))
        else:
            if rss is None:
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            cuda = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
            conn.send({"peak_rss_gb": round(rss / 1e9, 3),
                       "peak_cuda_gb": None if cuda is None else round(cuda / 1e9, 3),
                       "build_s": round(build_s, 2)})
            conn.close()
            return


#: kernels whose time is a floor for any exact implementation of the step: the convolutions
#: (same arithmetic in every implementation) and BatchNorm (memory-bound passes)
KERNELS = {
    "conv": ("aten::mkldnn_convolution", "aten::convolution_backward",
             "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward"),
    "batch_norm": ("aten::native_batch_norm", "aten::native_batch_norm_backward",
                   "aten::_batch_norm_with_update", "aten::batch_norm_backward"),
}


def _profile(step, st, feed, steps: int) -> dict:
    """Seconds per step inside the convolution and BatchNorm kernels (``torch.profiler``
    self CPU time, CPU only), and in all kernels together, over ``steps`` more steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(st, feed.train_batch(), feed)
    events = prof.key_averages()
    out = {k: sum(e.self_cpu_time_total for e in events if e.key in names) / 1e6 / steps
           for k, names in KERNELS.items()}
    out["all_kernels"] = sum(e.self_cpu_time_total for e in events) / 1e6 / steps
    return {"steps": steps, **{k: round(v, 4) for k, v in out.items()}}


def run(args: argparse.Namespace) -> dict:
    kinds = ["ours"] + (["reference"] if args.reference else []) + \
        (["baseline"] if args.baseline else []) + [f"also{i}" for i in range(len(args.also))]
    ctx = mp.get_context("spawn")
    procs, conns = {}, {}
    for k in kinds:
        a, b = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(b, k, vars(args)), daemon=True)
        p.start()
        procs[k], conns[k] = p, a
    for k in kinds:
        conns[k].recv()
    times = {k: [] for k in kinds}
    cpu = {k: [] for k in kinds}
    t_end = time.perf_counter() + args.max_minutes * 60 if args.max_minutes else None
    for i in range(args.warmup + args.steps):
        if t_end is not None and i > args.warmup + 2 and time.perf_counter() > t_end:
            print(f"--max-minutes reached after {i - args.warmup} timed steps", file=sys.stderr)
            break
        order = kinds if i % 2 == 0 else kinds[::-1]  # alternate who goes first
        for k in order:
            conns[k].send("step")
            wall, c = conns[k].recv()
            if i >= args.warmup:
                times[k].append(wall)
                cpu[k].append(c)
            print(f"step {i + 1}/{args.warmup + args.steps} {k} {wall:.3f}s", file=sys.stderr,
                  flush=True)
    out = {}
    for k in kinds:
        if args.profile:
            conns[k].send("profile")
            out.setdefault("profile", {})[k] = conns[k].recv()
        conns[k].send("stats")
        stats = conns[k].recv()
        procs[k].join(timeout=30)
        out[k] = {"timed_steps": len(times[k]),
                  "median_s": round(statistics.median(times[k]), 4),
                  "mean_s": round(statistics.mean(times[k]), 4),
                  "min_s": round(min(times[k]), 4),
                  "cpu_median_s": round(statistics.median(cpu[k]), 4),
                  **stats, **({"kernels_s": out["profile"][k]} if args.profile else {})}
    out.pop("profile", None)
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="darts", help="darts, nb201, tiny or a YAML path")
    ap.add_argument("--method", default="darts",
                    help="a preset (configs/NAME.yaml: its method axes) or axes, e.g. "
                         "activation=softmax,gradient=first_order")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="more config overrides, e.g. gradient.K=5")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--cells", type=int, default=None, help="default: the space's")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (median over them)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop early (at least 3 timed steps) once this much time has passed; "
                         "the JSON's steps says how many were timed")
    ap.add_argument("--reference", action="store_true",
                    help="also time the plain quark0-style step, interleaved with ours")
    ap.add_argument("--baseline", metavar="DIR",
                    help="also time train_step of the raydnas package found in DIR (e.g. an "
                         "older checkout), interleaved: the effect of a change")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="after timing, profile STEPS more steps of each (CPU): seconds per "
                         "step in the convolution and BatchNorm kernels (kernels_s), and "
                         "their share of the reference step (floor_ratio)")
    ap.add_argument("--also", metavar="METHOD", action="append", default=[],
                    help="also time our step with this method, interleaved (e.g. --method "
                         "darts_v2 --also darts_v1: unrolled against first order); repeatable")
    args = ap.parse_args(argv)
    res = run(args)
    import torch

    cfg = make_config(args.space, args.method, args.batch, args.channels, args.cells, args.set)
    method = cfg.method()
    key = "gdas" if method["activation"] == "gumbel_hard" else method["gradient"]
    params = {a: getattr(cfg, a).params for a in method if getattr(cfg, a).params}
    line = {
        "space": args.space, "method": method, "params": params,
        "batch": args.batch, "channels": args.channels, "cells": args.cells,
        "threads": args.threads, "device": args.device, "steps": args.steps,
        "warmup": args.warmup, **res,
    }
    if "reference" in res:
        line["ratio_time"] = round(res["ours"]["median_s"] / res["reference"]["median_s"], 3)
        line["ratio_cpu"] = round(res["ours"]["cpu_median_s"]
                                  / res["reference"]["cpu_median_s"], 3)
        line["ratio_rss"] = round(res["ours"]["peak_rss_gb"] / res["reference"]["peak_rss_gb"], 3)
        if args.profile:
            # ours ÷ reference if everything but the convolution and BatchNorm kernels were free
            k = res["ours"]["kernels_s"]
            line["floor_ratio"] = {
                "conv": round(k["conv"] / res["reference"]["median_s"], 3),
                "conv_and_batch_norm": round((k["conv"] + k["batch_norm"])
                                             / res["reference"]["median_s"], 3)}
    if "baseline" in res:
        line["baseline_dir"] = args.baseline
        line["ratio_to_baseline"] = round(res["ours"]["median_s"] / res["baseline"]["median_s"], 3)
    for i, m in enumerate(args.also):
        c = make_config(args.space, m, args.batch, args.channels, args.cells)
        res[f"also{i}"]["method"] = c.method()
        res[f"also{i}"]["params"] = {a: getattr(c, a).params for a in AXES
                                     if getattr(c, a).params}
        line[f"ratio_to_also{i}"] = round(res["ours"]["median_s"]
                                          / res[f"also{i}"]["median_s"], 3)
    ref = ISSUE_REFERENCE.get((args.space, key))
    if ref and args.batch == 16 and args.channels == 16 and args.cells is None \
            and args.device == "cpu":
        line["issue_reference"] = {"impl": ref[0], "s": ref[1], "rss_gb": ref[2]}
        line["ratio_to_issue"] = round(res["ours"]["median_s"] / ref[1], 3)
        if "reference" in res:
            # The plain reference path stands in for the table's implementation of the method on
            # this (shared, loaded) machine: slowdown = plain path here / table figure, and the
            # ratio to the table corrected by it. Assumes the plain path unloaded ~ the table.
            slow = res["reference"]["median_s"] / ref[1]
            line["machine_slowdown"] = round(slow, 3)
            line["ratio_to_issue_calibrated"] = round(res["ours"]["median_s"] / slow / ref[1], 3)
    line.update(torch=torch.__version__, python=platform.python_version(),
                machine=_cpu_name(),
                platform=platform.platform(), cpu_count=os.cpu_count(),
                load_avg=[round(v, 2) for v in os.getloadavg()],
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    print(json.dumps(line), flush=True)
    return line


if __name__ == "__main__":
    main()
