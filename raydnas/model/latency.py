"""Measured latency of every candidate op of a supernet, on the device it runs on: the
``latency`` cost of :func:`raydnas.model.costs.op_costs` (UNAS's latency objective, Vahdat et
al., CVPR 2020, measured per op instead of learned by a linear surrogate of whole networks).

Each op is timed on the input it receives in the supernet (one unfused forward with every op
on, the example batch), ``warmup`` runs then the fastest of ``repeats`` timed runs, in
milliseconds (``torch.cuda.synchronize`` around each run on a GPU; the minimum, as other work
on a shared device only ever adds time). Ops of the same module and input shape
are timed once. Results are cached per device, thread count and op shape in a JSON file
(``$RAYDNAS_CACHE`` or ``~/.cache/raydnas``, ``latency.json``), so the next search on the same
device reads the same table; a search keeps its table in its checkpoint (a resumed search
never re-measures).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .mixed import unfused

CACHE_FILE = "latency.json"


def cache_path() -> Path:
    """Where measured op latencies are kept between searches."""
    root = os.environ.get("RAYDNAS_CACHE") or Path.home() / ".cache" / "raydnas"
    return Path(root) / CACHE_FILE


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_label(device: torch.device) -> str:
    """The device (its GPU model, or the CPU's), the torch thread count and torch's version."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return f"{device.type}:{name}:threads={torch.get_num_threads()}:torch={torch.__version__}"


def _time(op: torch.nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> float:
    """The fastest of ``repeats`` timed runs, ms: the least disturbed by other work sharing the
    device (a shared 2-core machine varies by 100× between runs)."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        op(x)
    runs = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        op(x)
        sync()
        runs.append(time.perf_counter() - t0)
    return 1000.0 * min(runs)


def _read(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@torch.no_grad()
def op_latency(model: Any, x: torch.Tensor, *, warmup: int = 3, repeats: int = 10,
               cache: Path | None = None, data: int | None = None) -> dict[str, torch.Tensor]:
    """Per cell type a ``[cells, edges, ops]`` tensor of each candidate op's latency (ms) on
    ``x``'s device; ``cache``: the JSON file (default :func:`cache_path`; read and extended);
    ``data``: the data axis' configuration whose input the cells run on (its index)."""
    data_arg = {} if data is None else {"data": data}
    ops = list(model.mixed_ops())
    inputs: dict[int, torch.Tensor] = {}

    def keep(j: int):
        def hook(mod, inp, out) -> None:  # returns None: the op's output stays as it is
            inputs.setdefault(j, inp[0].detach())
        return hook

    hooks = [op.register_forward_hook(keep(j)) for j, (*_, op) in enumerate(ops)]
    was = model.training
    model.eval()
    try:
        with unfused(model):  # fused kernels never call the op modules: capture every input
            model(x, op_weights={ct: torch.ones(a.shape, device=x.device)
                                 for ct, a in model.alphas.items()}, **data_arg)
        path = cache or cache_path()
        table = _read(path)
        label, new = device_label(x.device), False
        n_cells = {ct: 1 + max(i for i, c, *_ in ops if c == ct) for ct in model.alphas}
        out = {ct: torch.zeros((n_cells[ct], *a.shape)) for ct, a in model.alphas.items()}
        for j, (i, ct, e, k, op) in enumerate(ops):
            inp = inputs.get(j)
            if inp is None:  # an op the forward never ran (a zero op): free
                continue
            key = f"{label}|{op!r}|{tuple(inp.shape)}|{inp.dtype}"
            if key not in table:
                table[key], new = _time(op, inp, warmup, repeats), True
            out[ct][i, e, k] = table[key]
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    if new:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(dict(sorted(table.items())), indent=0))
        os.replace(tmp, path)  # concurrent writers: the last wins, the others re-measure
    return out
