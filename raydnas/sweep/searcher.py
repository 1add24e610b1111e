"""A Ray Tune searcher that emits every trial of a study: methods × seeds, and Optuna points.

``tune.grid_search`` cannot be combined with a search algorithm in one Tuner, and one experiment
per method would leave GPUs idle while a method waits for its last seed. So this searcher holds
one Optuna study per method and drives them through Optuna's ask/tell interface:

* without ``optuna:`` it hands out every (method, seed) pair once, seed-major (every method's
  first seed runs before any method's second seed, so early results cover all methods);
* with ``evaluate:`` (raydnas.sweep.stage) every search trial that finishes queues its
  evaluation trials ahead of the remaining searches, so the cluster runs both;
* with ``optuna:`` it asks a method's study for a point only when a worker is free and nothing is
  queued, runs that point on every seed, and tells the study the aggregate (mean by default) of
  the objective over seeds once all of them finished. A point with a failed seed is told FAIL
  (a setting that diverges on one seed is not a reliable setting), one with a seed stopped
  early (a ``stop:`` rule or the ``sweep.scheduler``) PRUNED. Methods take turns, so every
  study advances and the cluster stays busy;
* with ``optuna.metric: eval_val_acc`` (the retrained cells' validation accuracy) a point is told
  only once the evaluations of all its seeds finished, the mean over each seed's evaluation
  seeds; a seed whose search or evaluation failed makes the point FAIL;
* the random and reference cells of the stage (``sweep.baseline``, ``evaluate.calibrate``) are
  queued first: they need no search;
* with ``sweep.race:`` the seeds are raced (:mod:`raydnas.sweep.race_queue`): every method's
  first ``min_seeds``, then more only for the methods still in contention.

Studies live in an Optuna storage on disk (a ``JournalStorage`` file by default, which
``optuna-dashboard`` opens). The searcher's own state (queue, points, seed results) is saved with
the experiment by Tune (``save``/``restore``), and on restore it re-opens the studies, adopts
points that were asked after the last experiment checkpoint (RUNNING in the study, unknown to the
saved state) and never tells a point twice.
"""

from __future__ import annotations

import copy
import math
import statistics
import warnings
from typing import Any

from ray.tune.search import Searcher

from ..model.spaces import load_space
from .optuna_setup import make_sampler, open_storage, tell_point
from .optuna_spec import EVAL_METRICS
from .persist import PickledState
from .race_queue import RaceQueue
from .stage import baseline_configs, eval_configs
from .study import Method, Study

# Lazy imports: Optuna loads only when the searcher opens its studies.


class StudySearcher(PickledState, Searcher):
    """Emits every trial of a :class:`~raydnas.sweep.study.Study` (see the module docstring).

    Each trial config is flat: ``activation``, ``gradient``, ``schedule``, ``regularizer``,
    ``method``, ``seed``, ``point`` (the Optuna trial number in the method's study, None without
    Optuna) and each Optuna parameter under its dotted config key.
    """

    def __init__(self, study: Study) -> None:
        super().__init__(metric=study.metric, mode=study.mode)
        self.study = study
        self._queue: list[dict[str, Any]] = []           # trial configs waiting for a worker
        #: trial id -> (method, point, seed)
        self._running: dict[str, tuple[str, int | None, int]] = {}
        # method -> point number -> {"params", "values": {seed: [objective...] | None}, "told"}
        self._points: dict[str, dict[int, dict[str, Any]]] = {m.name: {} for m in study.methods}
        self._asked: dict[str, int] = {m.name: 0 for m in study.methods}
        self._rr = 0                                      # round-robin pointer over methods
        self._configs: dict[str, dict[str, Any]] = {}     # running trial id -> its config
        self._studies: dict[str, Any] | None = None       # optuna studies (not pickled)
        if study.evaluate is not None and (study.evaluate.random or study.evaluate.calibrate):
            extra = {p.key: None for p in study.optuna.params} if study.optuna else {}
            self._queue += baseline_configs(study.evaluate, load_space(study.base["space"]),
                                            extra)
        self._race = RaceQueue(study.race, [m.name for m in study.methods],
                               len(study.evaluate.seeds)) if study.race is not None else None
        if study.optuna is None:
            self._enqueue(self._race.start() if self._race else
                          [(m.name, seed) for seed in study.seeds for m in study.methods])

    # -- Tune interface ---------------------------------------------------------------------
    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict | str | None:
        if not self._queue and self.study.optuna is not None:
            self._ask_next()
        if self._queue:
            cfg = self._queue.pop(0)
            self._running[trial_id] = (cfg["method"], cfg["point"], cfg["seed"])
            if self.study.evaluate is not None:
                self._configs[trial_id] = copy.deepcopy(cfg)
            return copy.deepcopy(cfg)
        if self.study.optuna is None or all(
                self._asked[m.name] >= self.study.points(m) for m in self.study.methods):
            return Searcher.FINISHED if not self._running else None
        return None

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        where = self._running.pop(trial_id, None)
        cfg = self._configs.pop(trial_id, None)
        if cfg is not None and cfg.get("kind") == "evaluate":
            if cfg.get("role") or cfg.get("variant"):  # Optuna and the race read the protocol's
                return
            if self._eval_metrics():
                self._record_eval(cfg, None if error else result)
            if self._race is not None:
                self._enqueue(self._race.eval_done(cfg["method"], cfg["seed"], cfg["eval_seed"],
                                                   None if error else result))
            return
        queued = []
        if cfg is not None and not error and result:
            # the evaluation stage: this search's cell, trained from scratch, queued first
            queued = eval_configs(self.study.evaluate, cfg, trial_id, result)
            self._queue[:0] = queued
        if where is not None and self._race is not None:
            self._enqueue(self._race.search_done(where[0], where[2], bool(queued)))
        if where is None or self.study.optuna is None:
            return
        method, point, seed = where
        rec = self._points[method].get(point)
        if rec is None:
            return
        values = None
        if not error and result:
            got = [math.nan if k in self._eval_metrics() else result.get(k)
                   for k in self.study.optuna.metrics]
            if all(isinstance(v, (int, float)) for v in got) and \
                    all(math.isfinite(v) for k, v in zip(self.study.optuna.metrics, got)
                        if k not in self._eval_metrics()):
                values = [float(v) for v in got]
        if values is not None and self._eval_metrics() and not queued:
            values = None  # no cell to evaluate: the point cannot be scored
        if values is not None and self._stopped(method, result):
            rec.setdefault("stopped", []).append(seed)
        rec["values"][seed] = values
        self._maybe_tell(method, point, rec)

    def _stopped(self, method: str, result: dict) -> bool:
        """Whether a search ended before its last epoch: a stop rule (``stopped_reason``) or
        the trial scheduler (fewer epochs than its method's, with no early stop of its own)."""
        if result.get("stopped_reason"):
            return True
        m = next((x for x in self.study.methods if x.name == method), None)
        epochs = m.epochs if m is not None else None
        return bool(epochs and result.get("epoch", epochs) < epochs
                    and not result.get("early_stop"))

    def _eval_metrics(self) -> list[str]:
        """The Optuna objectives that come from evaluation trials."""
        o = self.study.optuna
        return [m for m in o.metrics if m in EVAL_METRICS] if o is not None else []

    def _record_eval(self, cfg: dict[str, Any], result: dict | None) -> None:
        """An evaluation of a point's seed finished: keep its objective values."""
        rec = self._points.get(cfg["method"], {}).get(cfg.get("point"))
        if rec is None:
            return
        got = [(result or {}).get(k) for k in self._eval_metrics()]
        ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in got)
        rec.setdefault("evals", {}).setdefault(cfg["seed"], {})[cfg["eval_seed"]] = \
            [float(v) for v in got] if ok else None
        self._maybe_tell(cfg["method"], cfg.get("point"), rec)

    def _maybe_tell(self, method: str, point: int, rec: dict) -> None:
        """Tell the point once every seed (and, for evaluation objectives, every evaluation
        seed of every seed) has finished."""
        if rec["told"] or len(rec["values"]) < len(self.study.seeds):
            return
        em = self._eval_metrics()
        if em:
            n_eval = len(self.study.evaluate.seeds)
            evals = rec.get("evals", {})
            for seed, v in rec["values"].items():
                if v is None:
                    continue
                got = evals.get(seed, {})
                if len(got) < n_eval:
                    return  # evaluations still running
                if any(g is None for g in got.values()):
                    rec["values"][seed] = None
                    continue
                for i, k in enumerate(self.study.optuna.metrics):
                    if k in em:
                        j = em.index(k)
                        v[i] = statistics.fmean(g[j] for g in got.values())
        self._tell(method, point, rec)

    # -- Optuna -----------------------------------------------------------------------------
    def studies(self) -> dict[str, Any]:
        """The Optuna study of every method (opened, or created, on first use)."""
        if self._studies is None:
            self._open()
        return self._studies

    def _open(self) -> None:
        import optuna

        o = self.study.optuna
        storage = open_storage(self.study.journal_path())
        multi = len(o.metrics) > 1
        directions = ["maximize" if m == "max" else "minimize" for m in o.modes]
        self._studies = {}
        for m in self.study.methods:
            st = optuna.create_study(
                storage=storage, study_name=self.study.study_name(m), load_if_exists=True,
                directions=directions)
            # a seeded sampler re-created after a restore must not replay its first suggestions
            done = len(st.get_trials(deepcopy=False))
            seed = None if o.seed is None else o.seed + 7919 * done
            st.sampler = make_sampler(o.sampler, seed, multi)
            with warnings.catch_warnings():  # experimental in Optuna, stable in practice
                warnings.simplefilter("ignore")
                st.set_metric_names(list(o.metrics))
            st.set_user_attr("method", m.choices())
            st.set_user_attr("seeds", list(self.study.seeds))
            st.set_user_attr("aggregate", o.aggregate)
            self._studies[m.name] = st
            self._adopt(m, st)

    def _adopt(self, m: Method, st) -> None:
        """Re-sync with the study after a restore: tell finished points, re-queue orphans."""
        from optuna.trial import TrialState

        for t in st.get_trials(deepcopy=False):
            rec = self._points[m.name].get(t.number)
            if rec is None and t.state == TrialState.RUNNING:
                # asked after the last experiment checkpoint: run it now instead of a new point
                params = {k: t.params[k] for k in m.params if k in t.params}
                self._points[m.name][t.number] = {"params": params, "values": {}, "told": False}
                self._asked[m.name] += 1
                for seed in self.study.seeds:
                    self._queue.append(self._config(m, seed, t.number, params))
            elif rec is not None and t.state != TrialState.RUNNING:
                rec["told"] = True

    def _ask_next(self) -> None:
        methods = self.study.methods
        studies = self.studies()
        for i in range(len(methods)):
            m = methods[(self._rr + i) % len(methods)]
            if self._asked[m.name] >= self.study.points(m):
                continue
            self._rr = (self._rr + i + 1) % len(methods)
            dists = {p.key: p.distribution() for p in self.study.optuna.params if p.key in m.params}
            t = studies[m.name].ask(fixed_distributions=dists)
            params = {k: t.params[k] for k in dists}
            t.set_user_attr("seeds", list(self.study.seeds))
            self._points[m.name][t.number] = {"params": params, "values": {}, "told": False}
            self._asked[m.name] += 1
            for seed in self.study.seeds:
                self._queue.append(self._config(m, seed, t.number, params))
            return

    def _tell(self, method: str, point: int, rec: dict) -> None:
        tell_point(self.studies()[method], point, list(rec["values"].values()),
                   bool(rec.get("stopped")), self.study.optuna)
        rec["told"] = True

    # -- trial configs ----------------------------------------------------------------------
    def _enqueue(self, pairs: list[tuple[str, int]]) -> None:
        """Queue the searches of (method name, seed) pairs, without Optuna points."""
        by = {m.name: m for m in self.study.methods}
        self._queue += [self._config(by[m], seed, None, {}) for m, seed in pairs]

    def _config(self, m: Method, seed: int, point: int | None, params: dict) -> dict[str, Any]:
        cfg: dict[str, Any] = dict(m.choices())
        cfg.update(method=m.name, seed=int(seed), point=point)
        # every trial has every Optuna key (None where it does not apply to the method), so
        # tables and DataFrames have the same columns for all trials
        if self.study.optuna is not None:
            cfg.update({p.key: None for p in self.study.optuna.params})
        cfg.update(params)
        return cfg

    # -- persistence (Tune pickles the searcher with the experiment) -------------------------
    def get_state(self) -> dict[str, Any]:
        return {"queue": self._queue, "running": self._running, "points": self._points,
                "asked": self._asked, "rr": self._rr, "configs": self._configs,
                "race": self._race}

    def set_state(self, state: dict[str, Any]) -> None:
        self._queue = state["queue"]
        self._running = state["running"]
        self._points = state["points"]
        self._asked = state["asked"]
        self._rr = state["rr"]
        self._configs = state.get("configs", {})
        self._race = state.get("race", self._race)
        self._studies = None  # re-opened (and re-synced) on next use
        if self.study.optuna is not None:
            self._open()

    def __getstate__(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["_studies"] = None
        return d
