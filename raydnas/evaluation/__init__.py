"""Evaluation against the truth: train found cells from scratch and measure their test accuracy.

Public API: :class:`Protocol`, :data:`PROTOCOLS`, :func:`resolve_protocol`, :class:`EvalJob`,
:func:`run_evaluation`, :func:`plan` (the jobs of an experiment, a search run or a genotype).
Importing it imports neither Ray nor torchvision, nor torch until a job is planned or run.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import ConfigError
from .protocol import KEYS, PROTOCOLS, Protocol, default_protocol
from .protocol import resolve as resolve_protocol

# Lazy imports: the facade and plan() load torch only when jobs are built; the CLI reads KEYS and
# PROTOCOLS for `--help` without it.

if TYPE_CHECKING:
    from .jobs import Planned

#: names served lazily from the torch-side modules, so that the protocol table (the CLI's
#: ``--help``) imports no torch: name -> submodule
_LAZY = {"Planned": "jobs", "from_baseline": "jobs", "from_experiment": "jobs",
         "from_genotype": "jobs", "from_run": "jobs", "EvalJob": "train",
         "build_network": "train", "count_params": "train", "run_evaluation": "train"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["EvalJob", "KEYS", "PROTOCOLS", "Planned", "Protocol", "build_network",
           "count_params", "default_protocol", "plan", "resolve_protocol", "run_evaluation"]


def plan(source: str | None, *, genotype: str | None = None, space: str | None = None,
         protocol: str = "nb201_short", seeds: list[int] | None = None,
         overrides: dict[str, Any] | None = None, out: str | None = None,
         where: str = "raydnas evaluate", train: bool = True, random: int = 0,
         calibrate: bool = False) -> tuple[list[Planned], list[str]]:
    """Every job of an evaluation, checked before anything runs.

    ``overrides``: protocol keys (``epochs``) and ``data.KEY`` entries (``data.root``).
    ``train=False``: jobs for a benchmark lookup (no training checks).
    ``random``: also ``random`` cells drawn uniformly from the space, and ``calibrate``: the
    space's reference cells (:mod:`raydnas.model.cells`), trained under the same protocol, seeds and
    data beside the found cells (``<cell id>_seed<k>``).
    Returns the jobs and a line for each trial of an experiment that is left out."""
    from .jobs import from_baseline

    if isinstance(random, bool) or not isinstance(random, int) or random < 0:
        raise ConfigError(where, "--random", random, "an integer >= 1 (random cells)")
    jobs, skipped = _plan(source, genotype, space, protocol, seeds, overrides, out, where, train)
    if (random or calibrate) and jobs:
        first = jobs[0]
        if calibrate:
            from ..model.cells import reference_cells

            reference_cells(first.job.space, where=where, key="--calibrate")
        root = first.out.parent if source is not None else \
            (Path(out) if out else Path("runs") / "evaluate" / first.job.protocol.name) / "baseline"
        jobs += from_baseline(first.job.space, first.job.data, first.job.protocol,
                              seeds if seeds is not None else [0], root, random, calibrate,
                              where, train)
    return jobs, skipped


def _plan(source, genotype, space, protocol, seeds, overrides, out, where, train):
    """The found cells' jobs (see :func:`plan`)."""
    from .jobs import from_genotype, from_run

    overrides = dict(overrides or {})
    data_over = {k.split(".", 1)[1]: overrides.pop(k) for k in list(overrides)
                 if k.startswith("data.")}
    seeds = seeds if seeds is not None else [0]
    if (source is None) == (genotype is None):
        raise ConfigError(where, "SOURCE", source,
                          "either an experiment or search run directory, or --genotype")
    if genotype is not None:
        if space is None:
            from ..model.genotype import parse_genotype

            try:
                space = "nb201" if parse_genotype(genotype).format == "nb201" else "darts"
            except (ValueError, SyntaxError):
                space = None
        proto = _protocol(protocol, space, overrides, where,
                          data_over.get("dataset", "digits"))
        return from_genotype(genotype, space, proto, seeds, data_over,
                             Path(out) if out else None, where, train), []
    src = Path(source).expanduser()
    if not src.is_dir():
        raise ConfigError(where, "SOURCE", source, "an existing directory")
    if (src / "config.yaml").is_file() and (src / "final.json").is_file():
        raw = yaml.safe_load((src / "config.yaml").read_text()) or {}
        proto = _protocol(protocol, raw.get("space"), overrides, where,
                          data_over.get("dataset") or (raw.get("data") or {}).get("dataset",
                                                                                  "digits"))
        return from_run(src, proto, seeds, data_over, where, train), []
    return _from_experiment(src, protocol, seeds, overrides, data_over, where, train)


def _from_experiment(src, protocol, seeds, overrides, data_over, where, train):
    from ..results.load import load_experiment
    from .jobs import from_experiment

    exp = load_experiment(src)
    if any(t.config.get("benchmark") for t in exp.trials):
        raise ConfigError(where, "SOURCE", str(src),
                          "a search run or a one-benchmark study: this is a suite "
                          "(sweep.benchmarks), whose cells each benchmark's evaluate: block "
                          "already retrains; rerun the sweep with another evaluate: instead")
    spaces, datasets = set(), set()
    for t in exp.trials:
        if t.path is not None and (t.path / "config.yaml").is_file():
            raw = yaml.safe_load((t.path / "config.yaml").read_text()) or {}
            spaces.add(raw.get("space"))
            datasets.add((raw.get("data") or {}).get("dataset", "digits"))
    dataset = data_over.get("dataset") or (next(iter(datasets)) if len(datasets) == 1
                                           else "cifar10")
    proto = _protocol(protocol, next(iter(spaces)) if len(spaces) == 1 else None, overrides,
                      where, dataset)
    return from_experiment(src, proto, seeds, data_over, where, train)


def _protocol(name: str | None, space: str | None, overrides, where,
              dataset: str = "digits") -> Protocol:
    """The named protocol, or the short one of the space's macro (``default_protocol``)."""
    if name is None:
        from ..model.spaces import load_space

        macro = load_space(space, where=where).macro if space else "nb201"
        name = default_protocol(macro, dataset)
    return resolve_protocol(name, overrides, where)
