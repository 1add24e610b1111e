"""Optuna's parts of a study: its storage (a journal file or a database), its sampler, and how a
point's values over seeds become one objective. Optuna is imported inside the functions."""

from __future__ import annotations

import statistics
from pathlib import Path

from ..results.remote import is_uri

# Lazy imports: Optuna loads only when a study opens its storage, so a study is parsed and
# validated without it.

_AGG = {"mean": statistics.fmean, "median": statistics.median, "min": min, "max": max}


def aggregate(values: list[float], how: str, mode: str = "max", k: float = 1.0) -> float:
    """The seeds' values of one Optuna point as one objective: ``mean``, ``median``, ``min``,
    ``max``, or ``robust``: mean − k·std for a maximized metric, mean + k·std for a minimized
    one (sample std; 0 with one seed), which prefers points that are good on every seed."""
    if how != "robust":
        return _AGG[how](values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values) + (-k if mode == "max" else k) * sd


def open_storage(spec: str):
    """An Optuna storage from a journal file path or a database URL."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if is_uri(spec):  # a database URL (sqlite:///..., postgresql://...)
        return optuna.storages.RDBStorage(spec)
    Path(spec).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(spec))


def make_sampler(name: str, seed: int | None, multi: bool):
    """The Optuna sampler called ``name``, seeded (multi-objective variants where needed)."""
    import optuna

    s = optuna.samplers
    if name == "tpe":
        return s.TPESampler(seed=seed)
    if name == "random":
        return s.RandomSampler(seed=seed)
    if name == "cmaes":
        return s.CmaEsSampler(seed=seed)
    if name == "gp":
        return s.GPSampler(seed=seed)
    if name == "nsga2":
        return s.NSGAIISampler(seed=seed)
    return s.QMCSampler(seed=seed)


def tell_point(study, point: int, values: list, stopped: bool, spec) -> None:
    """Tell an Optuna ``study`` how its trial ``point`` went, from the objective ``values`` of
    each seed (None: that seed failed): FAIL if a seed failed (a setting that diverges on one
    seed is not a reliable one), PRUNED if a seed stopped early (the point was not run out),
    else the aggregate over seeds of each objective of ``spec`` (an ``OptunaSpec``)."""
    from optuna.trial import TrialState

    if any(v is None for v in values):
        study.tell(point, state=TrialState.FAIL, skip_if_finished=True)
    elif stopped:
        study.tell(point, state=TrialState.PRUNED, skip_if_finished=True)
    else:
        objective = [aggregate([v[i] for v in values], spec.aggregate, spec.modes[i],
                               spec.robust_k) for i in range(len(spec.metrics))]
        study.tell(point, objective if len(objective) > 1 else objective[0],
                   skip_if_finished=True)
