"""What a sweep did, from Tune's results: :class:`SweepSummary`, and the lines printed at the
end."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .optuna_setup import open_storage
from .study import Study

# Lazy imports: Optuna loads only when a summary reads a study's storage.


@dataclass
class SweepSummary:
    """What a finished (or interrupted) sweep did; ``exit_code`` is what the CLI returns."""

    experiment: str
    total: int
    done: int
    failed: int
    unfinished: int
    reasons: dict[str, int] = field(default_factory=dict)
    best: dict[str, Any] | None = None
    wall_seconds: float = 0.0
    search_seconds: float = 0.0
    optuna_storage: str | None = None
    optuna_best: dict[str, Any] = field(default_factory=dict)  # method -> best point (seed mean)
    report: str | None = None
    evaluations: dict[str, int] | None = None  # done / failed / unfinished evaluation trials
    stopped: int = 0  # of ``done``: searches the trial scheduler ended before their last epoch
    decision: list[str] = field(default_factory=list)  # the report's decision (the truth's)

    @property
    def exit_code(self) -> int:
        if self.unfinished:
            return 130
        return 1 if self.failed else 0


def _reason(error: Any) -> str:
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else type(error).__name__
    return text[:200]


def summarize(results, study: Study, wall: float) -> SweepSummary:
    """Count Tune's results (search and evaluation trials apart) into a SweepSummary."""
    done, failed, unfinished = 0, 0, 0
    reasons: Counter[str] = Counter()
    best, search_s = None, 0.0
    evals = Counter()
    n_search, need = 0, 0  # need: evaluations the finished searches queue
    tests: dict[str, list[float]] = {}  # search trial id -> test accuracies of its evaluations
    searches: dict[str, dict[str, Any]] = {}
    stopped = 0
    # Tune's own trial states: a search the scheduler ended is TERMINATED short of its epochs
    ea = getattr(results, "_experiment_analysis", None)
    status = {t.trial_id: t.status for t in getattr(ea, "trials", None) or []}
    for r in results:
        m = r.metrics or {}
        sub = study.sub((r.config or {}).get("benchmark"))
        if (r.config or {}).get("kind") == "evaluate":
            p = sub.evaluate.protocol_of(r.config)
            finished = r.error is None and m.get("epoch") == p.epochs
            evals["failed" if r.error is not None else
                  "done" if finished else "unfinished"] += 1
            if r.error is not None:
                reasons[_reason(r.error)] += 1
            if finished and not r.config.get("role") and not r.config.get("variant") and \
                    isinstance(m.get("test_acc"), float):
                tests.setdefault(r.config["search_trial_id"], []).append(m["test_acc"])
            continue
        n_search += 1
        search_s += _epoch_seconds(r)
        if r.error is not None:
            failed += 1
            reasons[_reason(r.error)] += 1
            continue
        cfg = r.config or {}
        epochs = sub.epochs(cfg)
        if epochs is None or m.get("epoch", 0) < epochs and not m.get("early_stop"):
            if study.scheduler is None or status.get(m.get("trial_id")) != "TERMINATED":
                unfinished += 1
                continue
            stopped += 1
        done += 1
        need += sub.evaluate.per_cell() if sub.evaluate is not None else 0
        searches[r.metrics.get("trial_id") or ""] = {
            "method": cfg.get("method"), "seed": cfg.get("seed"), "point": cfg.get("point"),
            "genotype": m.get("genotype"), "path": r.path,
            **({"benchmark": cfg["benchmark"]} if cfg.get("benchmark") else {})}
    # the best line follows the truth: the found cell with the best retrained test accuracy
    # (reported, never selected on); without evaluations no cell is called best
    for tid, accs in tests.items():
        v = sum(accs) / len(accs)
        if tid in searches and (best is None or v > best["value"]):
            best = {"value": v, "metric": "test_acc", **searches[tid]}
    # a race decides its searches as it goes: the trials it created are the total (an
    # interrupted race says "race under way" in its decision line)
    total = n_search if study.race is not None else study.search_trials()
    unfinished += max(0, total - n_search)
    s = SweepSummary(study.experiment_path, total, done, failed, unfinished,
                     dict(reasons), best, wall, search_s, study.journal_path(), stopped=stopped)
    if study.evaluate is not None:
        expected = need + study.baseline_trials()
        evals["unfinished"] = max(evals["unfinished"],
                                  expected - evals["done"] - evals["failed"])
        s.evaluations = {k: evals[k] for k in ("done", "failed", "unfinished")}
        s.unfinished += evals["unfinished"]
        s.failed += evals["failed"]
    return s


def _epoch_seconds(r) -> float:
    """Sum of a trial's per-epoch search times, from its metrics history."""
    try:
        df = r.metrics_dataframe
        if df is not None and "epoch_seconds" in df:
            return float(df.drop_duplicates("epoch", keep="last")["epoch_seconds"].sum())
    except Exception:
        pass
    return 0.0


def optuna_best(study: Study) -> dict[str, Any]:
    """Per method, the best Optuna point so far (its seed aggregate), read from the storage.

    Multi-objective studies give the size of their Pareto front instead.
    """
    import optuna

    storage = open_storage(study.journal_path())
    out: dict[str, Any] = {}
    for m in study.methods:
        try:
            st = optuna.load_study(study_name=study.study_name(m), storage=storage)
            if len(study.optuna.metrics) > 1:
                out[m.name] = {"pareto_front": len(st.best_trials)}
            else:
                b = st.best_trial
                out[m.name] = {"point": b.number, "value": b.value, "params": b.params}
        except (KeyError, ValueError):  # no study yet, or no complete point
            continue
    return out


def print_summary(s: SweepSummary, study: Study) -> None:
    """The end-of-sweep lines: counts, failures, best trial, Optuna, where the results are."""
    p = print
    p("\n== raydnas sweep ==")
    stopped = f" ({s.stopped} stopped by the scheduler)" if s.stopped else ""
    p(f"trials: {s.total} total, {s.done} done{stopped}, {s.failed} failed, {s.unfinished} "
      f"unfinished   (wall {s.wall_seconds:.0f} s, search time summed over trials "
      f"{s.search_seconds:.0f} s)")
    if s.evaluations is not None:
        e = s.evaluations
        label = "each benchmark's protocol" if study.benchmarks else study.evaluate.protocol.label
        p(f"evaluations ({label}): {e['done']} done, {e['failed']} "
          f"failed, {e['unfinished']} unfinished")
    for why, n in sorted(s.reasons.items(), key=lambda kv: -kv[1]):
        p(f"  failed x{n}: {why}")
    if study.benchmarks and s.evaluations is not None:
        for line in s.decision:  # a suite: the ranking across benchmarks, each one's decision
            p(line)
    elif s.best:
        b = s.best
        pt = "" if b["point"] is None else f" point {b['point']}"
        p(f"best retrained cell: test_acc {b['value']:.4f} ({study.evaluate.protocol.label}; "
          f"reported, never selected on): {b['method']} seed {b['seed']}{pt}")
        if b.get("genotype"):
            p(f"  genotype {b['genotype']}")
        for line in s.decision:
            p(line)
        if s.report:
            p("  the report ranks the methods by this truth, with percentiles among random "
              "cells and the proxies' validity")
    elif s.done:
        p("no claim on cell quality: no found cell was trained from scratch, and the search's "
          "own numbers (discrete_val_acc, inherited weights) favour parameter-free cells; run "
          f"raydnas evaluate {s.experiment} --random 10 --calibrate, or add an evaluate: block")
    if s.optuna_best:
        agg = study.optuna.aggregate
        p(f"Optuna, best point per method ({agg} of {study.optuna.metrics[0]} over seeds):")
        for name, b in s.optuna_best.items():
            if "pareto_front" in b:
                p(f"  {name}: {b['pareto_front']} points on the Pareto front")
            else:
                ps = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in b["params"].items())
                p(f"  {name}: {b['value']:.4f} at point {b['point']} ({ps})")
    p(f"results:     {s.experiment}")
    p(f"TensorBoard: tensorboard --logdir {s.experiment}")
    if s.optuna_storage:
        how = f"optuna-dashboard {s.optuna_storage}"
        p(f"Optuna:      {s.optuna_storage}   (studies {study.name}/<method>; {how})")
    if s.report:
        p(f"report:      {s.report}")
    else:
        p(f"report:      raydnas reduce {s.experiment}")
    if s.unfinished:
        p("interrupted: run the same command again to continue")


