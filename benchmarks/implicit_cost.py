"""Cost of iDARTS's implicit hypergradient per α step, against K and T.

    PYTHONPATH=. python benchmarks/implicit_cost.py --space nb201 --K 0 1 2 5 10 --T 1 4 5 10

Same setting as ``benchmarks/step.py`` (batch 16 of random 3×32×32 images, C = 16, 2 threads).
In one process, interleaved, medians over ``--reps``: the weight step alone (forward, backward,
clip, SGD), the α gradient of ``first_order`` and ``unrolled``, and of ``implicit`` for each K
(Neumann terms v_0..v_K; ``inner_steps`` 0, as iDARTS). iDARTS steps α once every T weight
steps (``schedule: interval``), so the cost per weight step is ``weight + α/T``. Prints one JSON
line (``--out`` also writes it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step import Feeder, _cpu_name, build_state, make_config, synthetic_data  # noqa: E402

from raydnas.axes.schedule import Schedule  # noqa: E402
from raydnas.search.run import train_step  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="nb201")
    ap.add_argument("--K", type=int, nargs="+", default=[0, 1, 2, 5, 10])
    ap.add_argument("--T", type=int, nargs="+", default=[1, 4, 5, 10])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--cells", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    data = synthetic_data(max(64, 4 * args.batch))
    methods = {"first_order": "gradient=first_order", "unrolled": "gradient=unrolled",
               **{f"implicit_K{k}": f"gradient=implicit,gradient.K={k}" for k in args.K}}
    states, feeds = {}, {}
    for name, m in methods.items():
        cfg = make_config(args.space, m, args.batch, args.channels, args.cells)
        states[name] = build_state(cfg, dev, data)
        states[name].steps_per_epoch = 100
        feeds[name] = Feeder(data, args.batch, dev)
    t_alpha = {n: [] for n in methods}
    t_weight = []
    for rep in range(args.reps + 1):  # the first round warms up
        for name, st in states.items():
            feed = feeds[name]
            tb, vb = feed.train_batch(), feed.next()
            st.a_optimizer.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            st.gradient.arch_grad(st, tb, vb)
            st.a_optimizer.step()
            dt = time.perf_counter() - t0
            if rep:
                t_alpha[name].append(dt)
            if name == "first_order":  # the weight step alone: α steps switched off
                every = st.schedule
                st.schedule = _Never()
                t0 = time.perf_counter()
                train_step(st, feed.train_batch(), feed)
                if rep:
                    t_weight.append(time.perf_counter() - t0)
                st.schedule = every
            print(f"rep {rep}/{args.reps} {name} {dt:.3f}s", file=sys.stderr, flush=True)
    w = statistics.median(t_weight)
    alpha = {n: round(statistics.median(v), 4) for n, v in t_alpha.items()}
    fo = alpha["first_order"]
    line = {
        "space": args.space, "batch": args.batch, "channels": args.channels,
        "threads": args.threads, "reps": args.reps, "weight_step_s": round(w, 4),
        "alpha_step_s": alpha,
        "alpha_step_x_first_order": {n: round(a / fo, 2) for n, a in alpha.items()},
        "per_weight_step_s": {n: {f"T{t}": round(w + a / t, 4) for t in args.T}
                              for n, a in alpha.items()},
        "per_weight_step_x_first_order_T1": {
            n: {f"T{t}": round((w + a / t) / (w + fo), 2) for t in args.T}
            for n, a in alpha.items()},
        "torch": torch.__version__, "python": platform.python_version(), "machine": _cpu_name(),
        "cpu_count": os.cpu_count(), "load_avg": [round(v, 2) for v in os.getloadavg()],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    print(json.dumps(line), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(json.dumps(line) + "\n")
    return line


class _Never(Schedule):
    """A schedule that never steps α (to time the weight step alone)."""

    def wants_step(self, st) -> bool:
        return False


if __name__ == "__main__":
    main()
