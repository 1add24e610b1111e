"""Seconds per training step of the evaluation protocols: raydnas's network and step against a
plain reference step of the same network (quark0/darts ``train.py``'s loop: NCHW tensors, stock
functional calls, the op outputs summed per node, drop-path as ``x.div(keep).mul(mask)``).

One step = forward (with the auxiliary head for ``darts``), cross-entropy (+ 0.4 × auxiliary),
backward, gradient clipping (``darts``: 5), SGD (momentum, weight decay; Nesterov for
``nb201``). Both run the same cell (DARTS_V2 for ``darts``, the NB201 cell of the parameter-count
test for ``nb201``) on random 3×32×32 images, in one process, interleaved step by step, after
warm-up; medians. The seconds per epoch are the step median times the protocol's steps per
CIFAR-10 epoch (50,000 / batch size). Prints one JSON line per protocol::

    PYTHONPATH=. python benchmarks/eval_step.py --protocol nb201 --batch 64 --steps 5
    PYTHONPATH=. python benchmarks/eval_step.py --protocol darts --batch 32 --steps 3
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
      "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
      "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
      "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
      "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
NB = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
      "nor_conv_3x3~2|")


def plain_forward(net, x, drop_p: float):
    """The reference forward of a raydnas DiscreteNetwork with plain functional calls."""
    from benchmarks.reference import plain
    from raydnas.model.macro import ResNetBasicBlock

    aux = None

    def cell_fwd(cell, inputs):
        states = [plain(p, t) for p, t in zip(cell.pre, inputs)] if cell.pre is not None \
            else list(inputs)
        for wires in cell.wiring:
            s = 0
            for i, k in wires:
                op = cell.ops[k]
                h = plain(op, states[i])
                if drop_p > 0 and not isinstance(op, nn.Identity):
                    keep = 1 - drop_p
                    mask = torch.empty(h.shape[0], 1, 1, 1).bernoulli_(keep)
                    h = h.div(keep).mul(mask)
                s = s + h
            states.append(s)
        return torch.cat(states[cell.space.inputs:], 1) if cell.space.output == "concat" \
            else states[-1]

    s = plain(net.stem, x)
    prev = [s, s]
    for i, cell in enumerate(net.cells):
        if isinstance(cell, ResNetBasicBlock):
            out = plain(cell, prev[1])
        else:
            out = cell_fwd(cell, prev if net.space.macro == "darts" else [prev[1]])
        prev = [prev[1], out]
        if net.aux_index is not None and i == net.aux_index:
            h = plain(net.auxiliary_head.features, out)
            aux = F.linear(h.flatten(1), net.auxiliary_head.classifier.weight,
                           net.auxiliary_head.classifier.bias)
    out = plain(net.head, prev[1]) if not isinstance(net.head, nn.Identity) else prev[1]
    out = F.adaptive_avg_pool2d(out, 1).flatten(1)
    return F.linear(out, net.classifier.weight, net.classifier.bias), aux


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", choices=["darts", "nb201"], default="nb201")
    ap.add_argument("--batch", type=int, default=None, help="default: the protocol's")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from raydnas.config.experiment import DataConfig
    from raydnas.evaluation import EvalJob, build_network, resolve_protocol
    from raydnas.model.genotype import parse_genotype
    from raydnas.model.spaces import load_space

    p = resolve_protocol(a.protocol)
    space = load_space(p.macro)
    job = EvalJob(parse_genotype(V2 if a.protocol == "darts" else NB), space, DataConfig(), p)
    torch.manual_seed(0)
    ours = build_network(job, 10, 3)
    ref = copy.deepcopy(ours).to(memory_format=torch.contiguous_format)
    bs = a.batch or p.batch_size
    x = torch.randn(bs, 3, 32, 32)
    y = torch.randint(0, 10, (bs,))
    aux_w = p.auxiliary_weight

    def opt(net):
        return torch.optim.SGD(net.parameters(), lr=p.lr, momentum=p.momentum,
                               nesterov=p.nesterov, weight_decay=p.weight_decay)

    o_ours, o_ref = opt(ours), opt(ref)
    ours.train()
    ref.train()
    ours.drop_path_prob = p.drop_path / 2

    def make_step(net, o, forward):
        def step():
            o.zero_grad(set_to_none=True)
            out = forward()
            logits, aux = out if isinstance(out, tuple) else (out, None)
            loss = F.cross_entropy(logits, y)
            if aux is not None:
                loss = loss + aux_w * F.cross_entropy(aux, y)
            loss.backward()
            if p.grad_clip:
                nn.utils.clip_grad_norm_(net.parameters(), p.grad_clip)
            o.step()
        return step

    step_ours = make_step(ours, o_ours, lambda: ours(x))
    step_ref = make_step(ref, o_ref, lambda: plain_forward(ref, x.contiguous(), p.drop_path / 2))

    times = {"ours": [], "reference": []}
    for fn in (step_ours, step_ref):  # warm-up
        fn()
    for _ in range(a.steps):
        for name, fn in (("ours", step_ours), ("reference", step_ref)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    per_epoch = 50_000 // bs
    print(json.dumps({
        "protocol": a.protocol, "batch": bs, "threads": a.threads, "steps": a.steps,
        "params": sum(q.numel() for n, q in ours.named_parameters()
                      if not n.startswith("auxiliary_head")),
        "s_per_step": med, "ratio": med["ours"] / med["reference"],
        "s_per_epoch_cifar10": {k: v * per_epoch for k, v in med.items()},
        "all": times, "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "torch": torch.__version__,
        "date": datetime.datetime.now().isoformat(timespec="seconds")}))


if __name__ == "__main__":
    main()
