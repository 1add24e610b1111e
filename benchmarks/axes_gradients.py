"""Time per α step of each architecture-gradient estimator, relative to first_order (CPU).

    PYTHONPATH=$PWD python benchmarks/axes_gradients.py [--spaces tiny darts] [--reps 5]

For each space, every estimator gets the same model, batches and seed. Two timings, medians
over ``--reps`` interleaved repetitions: ``arch_grad`` alone (the α gradient), and one whole
``train_step`` (α step + weight step; single_level's α gradient shares the weight backward).
The darts space runs at its search size (8 cells, C = 16) on the embedded digits (8x8) data.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from raydnas.config.experiment import from_dict
from raydnas.search.run import SearchState, train_step

GRADIENTS = ["first_order", "unrolled", "implicit", "mixed_level", "single_level"]


class _Fixed:
    def __init__(self, b):
        self.b = b

    def next(self):
        return self.b


def state(space: str, grad: str, batch: int) -> SearchState:
    raw = {"space": space, "epochs": 1, "data": {"batch_size": batch},
           "gradient": grad, "log": {"tensorboard": False, "print_every": 0}}
    st = SearchState(from_dict(raw, "<bench>"), torch.device("cpu"))
    st.steps_per_epoch = 100
    return st


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spaces", nargs="+", default=["tiny", "darts"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for space in args.spaces:
        batch = 32 if space == "tiny" else 64
        states = {g: state(space, g, batch) for g in GRADIENTS}
        x, y = states["first_order"].dataset.data
        tr, va = (x[:batch], y[:batch]), (x[batch:2 * batch], y[batch:2 * batch])
        t_grad = {g: [] for g in GRADIENTS}
        t_step = {g: [] for g in GRADIENTS}
        for g, st in states.items():  # warm-up
            st.gradient.arch_grad(st, tr, va)
        for _ in range(args.reps):
            for g, st in states.items():
                st.a_optimizer.zero_grad(set_to_none=True)
                t0 = time.perf_counter()
                st.gradient.arch_grad(st, tr, va)
                t_grad[g].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                train_step(st, tr, _Fixed(va))
                t_step[g].append(time.perf_counter() - t0)
        base_g = statistics.median(t_grad["first_order"])
        base_s = statistics.median(t_step["first_order"])
        print(f"\n{space} space, batch {batch}, {args.threads} thread(s), medians of {args.reps}")
        print(f"{'gradient':14s} {'arch_grad s':>12s} {'x first':>8s} {'train_step s':>13s} "
              f"{'x first':>8s}")
        for g in GRADIENTS:
            mg, ms = statistics.median(t_grad[g]), statistics.median(t_step[g])
            print(f"{g:14s} {mg:12.4f} {mg / base_g:8.2f} {ms:13.4f} {ms / base_s:8.2f}")


if __name__ == "__main__":
    main()
