"""What ``raydnas evaluate`` trains: the found cells of a sweep experiment, of one search run, or
a genotype string, each as one :class:`~raydnas.evaluation.train.EvalJob` per evaluation seed,
with the directory its results go to. An evaluation writes only below ``evaluation/``; it never
touches a search's own files.

* experiment (``raydnas sweep``'s ``<storage>/<name>``): every finished (``complete`` or
  ``stopped``) trial; results in ``<experiment>/evaluation/<protocol>/<trial id>_seed<k>/``.
* search run directory (``raydnas search ... --out DIR``): its final cell; results in
  ``DIR/evaluation/<protocol>/seed<k>/``.
* a genotype string in either format (``--genotype``), with ``--space`` (default ``nb201`` for an
  NB201 string, ``darts`` otherwise) and the dataset of ``data.*`` (default digits); results in
  ``--out`` (default ``runs/evaluate/<protocol>/<cell hash>/seed<k>``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config.sections import DataConfig, build_section
from ..errors import ConfigError
from ..model.cells import random_cell, reference_cells
from ..model.data_mix import input_dict
from ..model.genotype import Genotype, parse_genotype
from ..model.spaces import load_space
from ..results.genotype import trial_genotype
from ..results.load import USED, load_experiment
from .protocol import Protocol
from .train import EvalJob, check_job

BENCH = "nb201_benchmark"  # the directory (and protocol name) of benchmark lookups


@dataclass
class Planned:
    """One evaluation: the job, where its training results go, and where a benchmark lookup of
    its cell goes (``bench_out``, with the per-file cache ``bench_cache``)."""

    job: EvalJob
    out: Path
    bench_out: Path | None = None
    bench_cache: Path | None = None


def _genotype_from_final(final: dict, fallback: str | None) -> Genotype | None:
    """The exact cells of ``final.json`` (node structure included), else the parsed string."""
    g = final.get("genotype") if isinstance(final, dict) else None
    text = g.get("nb201") or g.get("darts") if isinstance(g, dict) else None
    text = text or fallback
    if not text:
        return None
    parsed = parse_genotype(text)
    cells = g.get("cells") if isinstance(g, dict) else None
    if cells:
        parsed = Genotype({c: tuple(tuple((str(op), int(i)) for op, i in node) for node in nodes)
                           for c, nodes in cells.items()}, parsed.inputs, parsed.output,
                          parsed.format)
    return parsed


def _run_config(run: Path, where: str) -> dict:
    p = run / "config.yaml"
    if not p.is_file():
        raise ConfigError(where, "SOURCE", str(run),
                          "a search run directory (with config.yaml and final.json), an "
                          "experiment directory of raydnas sweep, or --genotype")
    return yaml.safe_load(p.read_text()) or {}


def _data(raw: dict, overrides: dict[str, Any], where: str) -> DataConfig:
    d = dict(raw.get("data") or {})
    d.update(overrides)
    return build_section(DataConfig, d, "data", where)


def _data_input(final: Any) -> dict[str, Any]:
    """The data axis' chosen input of a search (``final.json``'s ``data_config``), which its
    cell is retrained on: ``{"data_input": {name, crop, resize, grayscale, normalize}}`` or
    {}."""
    d = final.get("data_config") if isinstance(final, dict) else None
    if not isinstance(d, dict):
        return {}
    return {"data_input": input_dict(d)}


def from_run(run: Path, protocol: Protocol, seeds: list[int], data_over: dict[str, Any],
             where: str = "raydnas evaluate", check: bool = True) -> list[Planned]:
    """The evaluation jobs of one search run directory: its found cell, one job per seed."""
    raw = _run_config(run, where)
    final_p = run / "final.json"
    if not final_p.is_file():
        raise ConfigError(where, "SOURCE", str(run), "a search run with a final.json (no epoch "
                          "has finished there yet)")
    final = json.loads(final_p.read_text())
    g = _genotype_from_final(final, None)
    space = load_space(raw["space"], where=str(run / "config.yaml"))
    meta = {"search_trial_id": run.name, "method": "/".join(
        (raw.get(a) or {}).get("name", "?") if isinstance(raw.get(a), dict) else str(raw.get(a))
        for a in ("activation", "gradient", "schedule", "regularizer")),
        "search_seed": raw.get("seed"), "search_dir": str(run),
        "search_complete": bool(final.get("complete")), **_data_input(final)}
    data = _data(raw, data_over, where)
    bench = run / "evaluation" / BENCH
    return [_plan(g, space, data, protocol, s, meta, run / "evaluation" / protocol.name /
                  f"seed{s}", where, bench, bench / "cache.json", check) for s in seeds]


def from_experiment(exp: Path, protocol: Protocol, seeds: list[int], data_over: dict[str, Any],
                    where: str = "raydnas evaluate", check: bool = True
                    ) -> tuple[list[Planned], list[str]]:
    """Jobs of every finished trial, and a line for each trial left out."""
    e = load_experiment(exp)
    plans, skipped = [], []
    for t in e.trials:
        if t.status not in USED or t.path is None:
            skipped.append(f"{t.describe()}: not finished, not evaluated")
            continue
        g = trial_genotype(t)
        cfg_p = t.path / "config.yaml"
        if g is None or not cfg_p.is_file():
            skipped.append(f"{t.describe()}: no genotype or config.yaml, not evaluated")
            continue
        raw = yaml.safe_load(cfg_p.read_text()) or {}
        if t.final and isinstance(t.final.get("genotype"), dict):
            g = _genotype_from_final(t.final, None) or g
        space = load_space(raw["space"], where=str(cfg_p))
        meta = {"search_trial_id": t.trial_id, "method": t.method, "search_seed": t.seed,
                "point": t.point, "search_dir": str(t.path),
                "search_complete": t.status == "complete",
                "hyperparameters": json.loads(json.dumps(t.hyperparameters, default=str)),
                **_data_input(t.final)}
        if not meta.get("data_input") and t.last.get("data_choice") and raw.get("data_search"):
            for c in raw["data_search"].get("configs") or []:  # no final.json data_config yet
                if c.get("name") == t.last["data_choice"]:
                    meta["data_input"] = input_dict(c)
        data = _data(raw, data_over, where)
        bench = e.path / "evaluation" / BENCH
        for s in seeds:
            plans.append(_plan(g, space, data, protocol, s, meta, e.path / "evaluation" /
                               protocol.name / f"{t.trial_id}_seed{s}", where,
                               bench / t.trial_id, bench / "cache.json", check))
    return plans, skipped


def from_genotype(text: str, space_name: str | None, protocol: Protocol, seeds: list[int],
                  data_over: dict[str, Any], out: Path | None,
                  where: str = "raydnas evaluate", check: bool = True) -> list[Planned]:
    """The evaluation jobs of a genotype given as text (DARTS or NB201 string)."""
    try:
        g = parse_genotype(text)
    except (ValueError, SyntaxError) as e:
        raise ConfigError(where, "--genotype", text,
                          f"a DARTS Genotype(...) or an NB201 |op~i|+... string ({e})") from None
    space = load_space(space_name or ("nb201" if g.format == "nb201" else "darts"),
                       where=where, key="--space")
    if g.format == "darts" and space.output == "last":
        g = parse_genotype(text, nodes=space.nodes)
    data = _data({"data": {"dataset": "digits"}}, data_over, where)
    h = hashlib.sha1(str(g).encode()).hexdigest()[:10]
    base = out if out is not None else Path("runs") / "evaluate" / protocol.name / h
    meta = {"search_trial_id": f"genotype-{h}", "method": "given", "search_seed": None}
    return [_plan(g, space, data, protocol, s, meta,
                  base / f"seed{s}" if len(seeds) > 1 or out is None else base, where,
                  base, base / "cache.json", check) for s in seeds]


def _plan(g, space, data, protocol, seed, meta, out, where, bench_out=None,
          bench_cache=None, check=True) -> Planned:
    """``check``: the training checks (a benchmark lookup trains nothing)."""
    job = EvalJob(g, space, data, protocol, seed, dict(meta))
    if check:
        check_job(job, where)
    return Planned(job, Path(out), bench_out, bench_cache)


def baseline_cells(space, random: int, calibrate: bool) -> list[dict[str, Any]]:
    """The random cells (``random`` of them) and, with ``calibrate``, the reference cells of
    ``space`` (:mod:`raydnas.model.cells`): one dict per cell with ``role``, ``method``, ``seed``
    (the cell's number), ``search_trial_id``, ``genotype``, ``cell_dead`` and, for reference cells,
    ``reference`` (its name) and ``reference_what``."""
    out = []
    for k in range(random):
        g = random_cell(space, k)
        out.append({"role": "random", "method": "random_cells", "seed": k,
                    "search_trial_id": f"random-{k}", "genotype": str(g),
                    "cell_dead": bool(g.dead_cells())})
    if calibrate:
        for k, (name, (what, g)) in enumerate(reference_cells(space).items()):
            out.append({"role": "reference", "method": "reference_cells", "seed": k,
                        "search_trial_id": f"reference-{name}", "genotype": str(g),
                        "reference": name, "reference_what": what,
                        "cell_dead": bool(g.dead_cells())})
    return out


def from_baseline(space, data: DataConfig, protocol: Protocol, seeds: list[int], root: Path,
                  random: int, calibrate: bool, where: str = "raydnas evaluate",
                  check: bool = True) -> list[Planned]:
    """Jobs of the random and reference cells, results in ``root/<cell id>_seed<k>/``."""
    plans = []
    for c in baseline_cells(space, random, calibrate):
        g = parse_genotype(c["genotype"], nodes=space.nodes)
        meta = {"search_trial_id": c["search_trial_id"], "method": c["method"],
                "search_seed": c["seed"],
                **{k: c[k] for k in ("role", "reference", "reference_what", "cell_dead")
                   if k in c}}
        for s in seeds:
            plans.append(_plan(g, space, data, protocol, s, meta,
                               root / f"{c['search_trial_id']}_seed{s}", where, check=check))
    return plans
