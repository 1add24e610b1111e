"""Benchmark lookup for NAS-Bench-201 cells, through the official API packages (NAS-Bench-201's
``nas_201_api`` and NATS-Bench's ``nats_bench``, whose topology search space ``tss`` holds the same
15,625 cells).

``raydnas evaluate SOURCE --benchmark FILE`` looks every found cell of a NAS-Bench-201-style
space (the 5 NB201 ops, one input node, 3 intermediate nodes: ``nb201``, ``tiny201``) up in the
user's own copy of the NAS-Bench-201 benchmark instead of training it, and reports what the
benchmark measured when NB201 trained that cell with its own protocol (C 16, N 5):

* ``test_acc``: CIFAR-10 test accuracy after training on CIFAR-10 train + valid (``cifar10``,
  ``ori-test``), the column the NB201 paper reports as "CIFAR-10 test";
* ``cifar10_valid_acc`` (``cifar10-valid``, ``x-valid``), ``cifar100_test_acc``
  (``cifar100``, ``x-test``), ``imagenet16_test_acc`` (``ImageNet16-120``, ``x-test``);
* the same after NB201's 12-epoch schedule (``*_12``) when the file has it (v1_1 does);
* as fractions in [0, 1], averaged over the benchmark's training seeds.

The file: ``NAS-Bench-201-v1_1-096897.pth`` (4.7 GB; recommended) or
``NAS-Bench-201-v1_0-e61699.pth``
(2.2 GB), from the links in the NAS-Bench-201 README (D-X-Y/NAS-Bench-201); or NATS-Bench's
topology benchmark (D-X-Y/NATS-Bench README): the fast-mode directory
``NATS-tss-v1_0-3ffb9-simple`` (one ``.pbz2`` per cell, read lazily) or the single
``NATS-tss-v1_0-3ffb9.pickle.pbz2``; the numbers are the same keys of the same API. The NB201 API
(``pip install nas-bench-201``, the ``benchmark`` extra) unpickles the whole file into memory:
plan for several times the file size in RAM. Results are cached per cell in a JSON file next to
the evaluation results, so the file is read once per experiment, not once per report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..model.genotype import Genotype

# Lazy imports: the NAS-Bench-201 / NATS-Bench API packages are optional (raydnas[benchmark]).

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (result key, API dataset, API set name in get_more_info's output)
QUERIES = (("test_acc", "cifar10", "test-accuracy"),
           ("cifar10_valid_acc", "cifar10-valid", "valid-accuracy"),
           ("cifar100_test_acc", "cifar100", "test-accuracy"),
           ("imagenet16_test_acc", "ImageNet16-120", "test-accuracy"))


def check_space(space: Any, where: str = "raydnas evaluate") -> None:
    """Only cells of NB201's cell space can be looked up."""
    if set(space.ops) - set(NB201_OPS) or space.inputs != 1 or space.nodes != 3 \
            or space.macro != "nb201":
        raise ConfigError(where, "--benchmark", space.name,
                          "cells of a NAS-Bench-201 space (ops "
                          f"{', '.join(NB201_OPS)}, 1 input and 3 intermediate nodes, nb201 "
                          f"macro); space {space.name!r} is not one")


def nb201_string(g: Genotype) -> str:
    """The arch string NB201 indexes: every edge written, ``none`` included."""
    return g.to_nb201()


def is_nats(path: str | Path) -> bool:
    """A NATS-Bench topology benchmark: its fast-mode directory or a ``.pbz2`` file."""
    p = Path(path).expanduser()
    return p.is_dir() or p.name.endswith(".pbz2")


_WANT = ("an existing NAS-Bench-201 file (NAS-Bench-201-v1_1-096897.pth or -v1_0-e61699.pth), "
         "or NATS-Bench's topology benchmark (the NATS-tss-v1_0-3ffb9-simple directory or "
         "NATS-tss-v1_0-3ffb9.pickle.pbz2)")


def check_benchmark(path: str | Path, where: str = "--benchmark") -> None:
    """The one-line errors that need no reading of the benchmark: it is missing, or its API
    package is not installed (reading a NAS-Bench-201 file takes minutes: done once, later)."""
    p = Path(path).expanduser()
    if not (p.is_file() or p.is_dir()):
        raise ConfigError(where, "benchmark", str(path), _WANT)
    pkg, module = ("nats_bench", "nats_bench") if is_nats(p) else ("nas-bench-201", "nas_201_api")
    try:
        __import__(module)
    except ImportError:
        raise ConfigError(where, "benchmark", str(path), "the official API package: pip install "
                          f"'raydnas[benchmark]' ({pkg})") from None


def open_api(path: str | Path, where: str = "--benchmark"):
    """The official API on the user's benchmark: ``NASBench201API`` on a NAS-Bench-201 ``.pth``
    file, ``nats_bench.create(..., 'tss')`` on NATS-Bench's topology benchmark (fast mode on its
    directory of per-architecture ``.pbz2`` files, else its single ``.pickle.pbz2``). A
    ConfigError if it is missing, the package is not installed, or it is not such a benchmark."""
    p = Path(path).expanduser()
    if not (p.is_file() or p.is_dir()):
        raise ConfigError(where, "benchmark", str(path), _WANT)
    if is_nats(p):
        return _open_nats(p, where)
    try:
        from nas_201_api import NASBench201API
    except ImportError:
        raise ConfigError(where, "benchmark", str(path),
                          "the official API package: pip install 'raydnas[benchmark]' "
                          "(nas-bench-201)") from None
    try:
        return NASBench201API(str(p), verbose=False)
    except Exception as e:  # the API asserts on foreign files; old files need full unpickling
        if type(e).__name__ == "UnpicklingError":
            data = torch.load(str(p), map_location="cpu", weights_only=False)  # the user's file
            try:
                return NASBench201API(data, verbose=False)
            except (AssertionError, KeyError, TypeError, ValueError) as e2:
                e = e2
        raise ConfigError(where, "benchmark", str(path),
                          f"a NAS-Bench-201 benchmark file ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else 'not one'})") from None


def _open_nats(p: Path, where: str):
    try:
        import nats_bench
    except ImportError:
        raise ConfigError(where, "benchmark", str(p),
                          "the official API package: pip install 'raydnas[benchmark]' "
                          "(nats_bench)") from None
    try:
        api = nats_bench.create(str(p), "tss", fast_mode=p.is_dir(), verbose=False)
        if p.is_dir() and len(api) == 0:
            raise ValueError("no architectures in meta.pickle.pbz2")
        return api
    except Exception as e:  # bz2/pickle errors, missing keys, a meta file of another kind
        raise ConfigError(where, "benchmark", str(p),
                          f"a NATS-Bench topology benchmark ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else 'not one'})") from None


#: NAS-Bench-201's and NATS-Bench tss's two training schedules (epochs); the NATS API lists a
#: fast-mode benchmark's schedules only once an architecture is loaded, so both are asked
HPS = ("200", "12")


def lookup(api: Any, arch: str) -> dict[str, Any] | None:
    """The benchmark's numbers of one arch string (None if it is not in the benchmark)."""
    index = api.query_index_by_arch(arch)
    if index < 0:
        return None
    out: dict[str, Any] = {"arch": arch, "index": int(index)}
    for hp in HPS:
        suffix = "" if hp == "200" else f"_{hp}"
        for key, dataset, field in QUERIES:
            try:
                info = api.get_more_info(index, dataset, hp=hp, is_random=False)
            except (KeyError, ValueError, AssertionError, IndexError):
                continue
            v = info.get(field)
            if v is not None:
                out[key + suffix] = float(v) / 100.0
    return out


class Cache:
    """Per-cell results of one benchmark file, in a JSON file."""

    def __init__(self, path: Path, benchmark: str | Path) -> None:
        self.path, self.benchmark = path, str(benchmark)
        self.data: dict[str, Any] = {}
        if path.is_file():
            d = json.loads(path.read_text())
            if d.get("benchmark") == Path(self.benchmark).name:
                self.data = d.get("cells", {})
        self._api = None

    def get(self, arch: str) -> dict[str, Any] | None:
        if arch not in self.data:
            if self._api is None:
                self._api = open_api(self.benchmark)
            self.data[arch] = lookup(self._api, arch)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"benchmark": Path(self.benchmark).name,
                                             "cells": self.data}, indent=1))
        return self.data[arch]


PROTOCOL = "nb201_benchmark"


def run_lookups(plans: list, benchmark: str | Path, log=print) -> list[tuple[Any, Path, Any]]:
    """Look every planned cell up (one per searched trial; evaluation seeds do not apply) and
    write ``<bench_out>/final.json`` (``evaluation/nb201_benchmark/...``), which the report joins
    like a training protocol. Everything is checked before anything is written."""
    for pl in plans:
        check_space(pl.job.space)
    check_benchmark(benchmark)
    seen, rows, caches = set(), [], {}
    for pl in plans:
        if pl.bench_out in seen:
            continue
        seen.add(pl.bench_out)
        cache = caches.setdefault(pl.bench_cache, Cache(pl.bench_cache, benchmark))
        arch = nb201_string(pl.job.genotype)
        res = cache.get(arch)
        if res is None:
            log(f"  {pl.job.meta.get('search_trial_id')}: {arch} is not in {Path(benchmark).name}")
            rows.append((pl.job, pl.bench_out, None))
            continue
        pl.bench_out.mkdir(parents=True, exist_ok=True)
        final = {"metrics": {"epoch": None, **res}, **pl.job.describe(),
                 "protocol": {"name": PROTOCOL, "short": False,
                              "benchmark": Path(benchmark).name},
                 "eval_seed": None, "complete": True}
        (pl.bench_out / "final.json").write_text(json.dumps(final, indent=1))
        rows.append((pl.job, pl.bench_out, res))
    return rows
