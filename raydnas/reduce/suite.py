"""``raydnas rank EXPERIMENT...``: several studies — one per benchmark, the same methods — ranked
together (:mod:`raydnas.reduce.ranking`): rank.md, rank.json and the critical-difference
diagram cd.png.

Example (two benchmarks of the same study)::

    raydnas sweep configs/decisive_study.yaml --set sweep.race=null sweep.seeds=3 --name d_tiny
    raydnas sweep configs/decisive_study.yaml --set sweep.race=null sweep.seeds=3 \\
        space=tiny201 --name d_tiny201
    raydnas rank runs/sweeps/d_tiny runs/sweeps/d_tiny201 --out runs/rank

    from raydnas.reduce.suite import rank_experiments
    result = rank_experiments(["runs/sweeps/d_tiny", "runs/sweeps/d_tiny201"], "runs/rank")
    result["mean_rank"], result["friedman_p"], result["cd"]
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .core import reduce
from .ranking import cd_figure, rank_markdown, rank_suite

# Lazy imports: none (reduce loads pandas, the figure matplotlib).


def scores_of(experiments: list[str], metric: str) -> dict[str, dict[str, float | None]]:
    """benchmark (the experiment's directory name) -> group -> its ``metric`` (None: no value,
    e.g. every search or retraining failed)."""
    names = [str(e).rstrip("/").rsplit("/", 1)[-1] for e in experiments]
    if len(set(names)) != len(names):
        raise ConfigError("raydnas rank", "EXPERIMENT", ", ".join(names),
                          "experiments with distinct directory names (they name the benchmarks)")
    out: dict[str, dict[str, float | None]] = {}
    for name, exp in zip(names, experiments):
        df = reduce(exp, write=False, plots=False, top=0)
        if "benchmarks" in df.attrs:
            raise ConfigError("raydnas rank", "EXPERIMENT", str(exp),
                              "one-benchmark studies: this is a suite (sweep.benchmarks), "
                              "whose own report already ranks its benchmarks (report/report.md)")
        if metric not in df.columns:
            raise ConfigError("raydnas rank", "--metric", metric,
                              f"a column of every experiment's report.csv ({exp} has none; "
                              "test_acc_mean needs an evaluate: block)")
        out[name] = {g: (float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None)
                     for g, v in zip(df["group"], df[metric])}
    return out


def rank_experiments(experiments: list[str], out: str | Path, metric: str = "test_acc_mean",
                     alpha: float = 0.05) -> dict[str, Any]:
    """Rank the studies' methods across them; write rank.md, rank.json and cd.png in ``out``."""
    if not 0 < alpha < 1:
        raise ConfigError("raydnas rank", "--alpha", alpha, "a number in (0, 1)")
    if len(experiments) < 2:
        raise ConfigError("raydnas rank", "EXPERIMENT", " ".join(map(str, experiments)),
                          "at least 2 experiments (one per benchmark)")
    scores = scores_of([str(e) for e in experiments], metric)
    if len({m for s in scores.values() for m in s}) < 2:
        raise ConfigError("raydnas rank", "EXPERIMENT", " ".join(map(str, experiments)),
                          "studies with at least 2 methods (groups) between them")
    result = rank_suite(scores, alpha)
    result["metric"], result["scores"] = metric, scores
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cd_figure(result, out / "cd.png")
    (out / "rank.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "rank.md").write_text("\n".join(rank_markdown(result)) + "\n")
    result["out_dir"] = str(out)
    return result
