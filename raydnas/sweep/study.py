"""The study config: ``sweep:`` and ``optuna:`` blocks of an experiment YAML → a validated
:class:`Study`.

A study is the set of trials of one Ray Tune experiment: every method × seed, and with
``optuna:`` for every method up to ``n_trials`` suggested points, each run on all seeds::

    sweep:
      grid:                        # a list of choices per axis (axes left out keep the base value)
        activation: [softmax, crb]
        schedule: [every, informed]
        regularizer: [none, prox, admm]
      methods:                     # and/or an explicit list (added after the grid)
        - {schedule: {name: interval, every: 2}}
        - {name: darts_fast_alpha, set: {optim.a_lr: 0.003}}   # a named variant
      seeds: 3                     # seeds 0, 1, 2 (or an explicit list [0, 7, 9])
      resources: {cpu: 1, gpu: 0.25}
      max_concurrent: null         # default: as many as resources allow
      max_failures: 2              # retries of a crashed trial from its last checkpoint
      storage: runs/sweeps         # a local directory or a URI (s3://bucket/path, gs://...)
      name: maile2021              # default: the config file's stem
      baseline: {random: 10}       # also train 10 random cells of the space (needs evaluate:)
      race: {min_seeds: 3, max_seeds: 10}  # seeds raced on the validation truth
                                   # (raydnas.sweep.race_spec; needs evaluate:, no seeds:)
      benchmarks: [...]            # a suite: every method on each benchmark (suite_spec)
    optuna:
      params:
        regularizer.rho: {log_uniform: [1.0e-4, 1.0]}
        schedule.threshold_multiplier: {uniform: [1.01, 1.2]}
        optim.a_lr: {log_uniform: [1.0e-4, 1.0e-2]}
      n_trials: 8                  # points per method
      metric: discrete_val_acc     # or a list, with a list of modes, for a Pareto front
      mode: max
      aggregate: mean              # over seeds: mean, median, min, max, or robust:
      robust_k: 1.0                #   mean − k·std (mode max; mean + k·std for min)
      sampler: tpe                 # tpe, random, cmaes, gp, nsga2, qmc
      seed: 0
      storage: null                # default: <storage>/<name>/optuna.journal (a journal file);
                                   # with remote storage ~/raydnas-optuna/<name>.journal on the
                                   # driver; or a database URL (sqlite:///..., postgresql://...)

Every value is checked here, before Ray starts; each problem is one
:class:`~raydnas.errors.ConfigError` line.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.experiment import ExperimentConfig, from_dict, merge
from ..errors import ConfigError, require_int
from ..model.cells import REFERENCE_NAMES
from ..results.remote import is_uri
from .methods import NAME_RE, Method, expand_methods
from .optuna_spec import parse_optuna
from .race_spec import parse_race
from .scheduler import parse_scheduler
from .stage import parse_baseline, parse_stage
from .suite_spec import parse_suite

SWEEP_KEYS = ("grid", "methods", "seeds", "resources", "max_concurrent", "max_failures",
              "storage", "name", "baseline", "scheduler", "race", "benchmarks", "skip_invalid")


@dataclass
class Study:
    """A validated study: what ``raydnas sweep`` turns into one Ray Tune experiment."""

    base: dict[str, Any]              # the experiment config's raw mapping, minus sweep/optuna
    source: str
    methods: list[Method]
    seeds: list[int]
    resources: dict[str, float]
    max_concurrent: int | None
    max_failures: int
    storage: str
    name: str
    optuna: Any = None                # raydnas.sweep.optuna_spec.OptunaSpec, or None
    evaluate: Any = None              # raydnas.sweep.stage.EvalStage, or None
    scheduler: Any = None             # raydnas.sweep.scheduler.SchedulerSpec, or None
    race: Any = None                  # raydnas.reduce.race.RaceRules, or None
    #: a suite (``sweep.benchmarks``): benchmark name -> its study (trials carry ``benchmark``)
    benchmarks: dict[str, "Study"] = field(default_factory=dict)
    #: per benchmark, the methods ``sweep.skip_invalid`` left out there, with why
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)

    def sub(self, benchmark: str | None) -> "Study":
        """The study of one benchmark of a suite (itself for a trial without a benchmark)."""
        return self.benchmarks[benchmark] if benchmark is not None else self

    @property
    def metric(self) -> str:
        """The metric shown as 'best so far' (the first objective)."""
        return self.optuna.metrics[0] if self.optuna else "discrete_val_acc"

    @property
    def mode(self) -> str:
        return self.optuna.modes[0] if self.optuna else "max"

    @property
    def experiment_path(self) -> str:
        return self.storage.rstrip("/") + "/" + self.name

    def journal_path(self) -> str | None:
        """The Optuna storage: a journal file path or a database URL (None without optuna)."""
        if self.optuna is None:
            return None
        if self.optuna.storage:
            return self.optuna.storage
        if is_uri(self.storage):  # remote experiment storage: keep the journal on the driver
            return str(Path.home() / "raydnas-optuna" / f"{self.name}.journal")
        return str(Path(self.experiment_path) / "optuna.journal")

    def study_name(self, method: Method) -> str:
        return f"{self.name}/{method.name}"

    def search_trials(self) -> int:
        if self.benchmarks:
            return sum(b.search_trials() for b in self.benchmarks.values())
        if self.optuna is None:
            return len(self.methods) * len(self.seeds)
        return sum(self.points(m) for m in self.methods) * len(self.seeds)

    def baseline_trials(self) -> int:
        """Evaluation trials of the random and reference cells."""
        if self.benchmarks:
            return sum(b.baseline_trials() for b in self.benchmarks.values())
        if self.evaluate is None:
            return 0
        cells = self.evaluate.random + (len(REFERENCE_NAMES) if self.evaluate.calibrate else 0)
        return cells * self.evaluate.per_cell()

    def total_trials(self) -> int:
        """Search trials, plus one evaluation trial per finished search and evaluation seed,
        plus the baseline's."""
        if self.benchmarks:
            return sum(b.total_trials() for b in self.benchmarks.values())
        n = self.search_trials()
        if self.evaluate is None:
            return n
        return n * (1 + self.evaluate.per_cell()) + self.baseline_trials()

    def base_config(self) -> ExperimentConfig:
        """The study's base experiment (no method of its own), validated."""
        return from_dict(copy.deepcopy(self.base), self.source)

    def points(self, method: Method) -> int:
        """Optuna points for a method: ``n_trials``, or 1 if no parameter applies to it."""
        if self.optuna is None:
            return 1
        return self.optuna.n_trials if method.params else 1

    def trial_raw(self, method: Method, seed: int, params: dict[str, Any] | None = None) -> dict:
        """The raw experiment mapping of one trial: the base, the method's axes, its ``set``
        values and the Optuna values, merged as data (validate it with ``from_dict``)."""
        raw = copy.deepcopy(self.base)
        for a, v in method.axes.items():
            raw[a] = copy.deepcopy(v)
        raw = merge(raw, {**method.overrides, **(params or {})}, source=self.source)
        raw["seed"] = int(seed)
        return raw

    def trial_config(self, method: Method, seed: int,
                     params: dict[str, Any] | None = None) -> ExperimentConfig:
        """One trial's validated config (its axes are constructed once more: call it once)."""
        return from_dict(self.trial_raw(method, seed, params), self.source)

    def epochs(self, config: dict[str, Any]) -> int | None:
        """The epochs a search trial (its Tune ``config``) runs: an Optuna value, else its
        method's, read from the method's config resolved at parse time."""
        if isinstance(config.get("epochs"), int):
            return config["epochs"]
        m = next((x for x in self.methods if x.name == config.get("method")), None)
        return m.epochs if m is not None else None


def _resources(f: str, r: Any) -> dict[str, float]:
    if r is None:
        return {"cpu": 1.0, "gpu": 0.0}
    if not isinstance(r, dict):
        raise ConfigError(f, "sweep.resources", r, "a mapping like {cpu: 1, gpu: 0.25}")
    out = {"cpu": 1.0, "gpu": 0.0}
    for k, v in r.items():
        if k not in ("cpu", "gpu"):
            raise ConfigError(f, f"sweep.resources.{k}", v, "unknown resource; allowed: cpu, gpu")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ConfigError(f, f"sweep.resources.{k}", v, "a number >= 0")
        if v > 1 and v != int(v):
            raise ConfigError(f, f"sweep.resources.{k}", v,
                              "a fraction <= 1 or a whole number (Ray's rule)")
        out[k] = float(v)
    if out["cpu"] <= 0 and out["gpu"] <= 0:
        raise ConfigError(f, "sweep.resources", r, "at least some cpu or gpu per trial")
    return out


def parse_study(cfg: ExperimentConfig, *, storage: str | None = None,
                name: str | None = None, on_method_error=None) -> Study:
    """Validate ``cfg``'s ``sweep``/``optuna`` blocks into a :class:`Study`.

    Args:
        cfg: a validated experiment config (its ``raw`` holds the blocks).
        storage: overrides ``sweep.storage`` (the CLI's ``--storage``).
        name: overrides ``sweep.name`` (the CLI's ``--name``).
        on_method_error: called with (method, ConfigError) when a method's config is invalid
            (a suite's benchmark: raise naming it, or skip the pair); default: raise.

    Raises:
        ConfigError: one line naming the first bad key.
    """
    f = cfg.source
    sweep = cfg.sweep if cfg.sweep is not None else {}
    for k, v in sweep.items():
        if k not in SWEEP_KEYS:
            raise ConfigError(f, f"sweep.{k}", v, f"unknown key; allowed: {', '.join(SWEEP_KEYS)}")
    seeds = sweep.get("seeds", 1)
    if isinstance(seeds, list):
        if not seeds or len(set(seeds)) != len(seeds) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise ConfigError(f, "sweep.seeds", seeds,
                              "an integer >= 1 or a list of distinct seeds >= 0")
        seed_list = list(seeds)
    else:
        seed_list = list(range(require_int(f, "sweep.seeds", seeds, 1,
                                    "an integer >= 1 or a list of distinct seeds >= 0")))
    mc = sweep.get("max_concurrent")
    if mc is not None:
        require_int(f, "sweep.max_concurrent", mc, 1, "an integer >= 1 or null")
    mf = require_int(f, "sweep.max_failures", sweep.get("max_failures", 2), 0)
    st = storage if storage is not None else sweep.get("storage", "runs/sweeps")
    if not isinstance(st, str) or not st:
        raise ConfigError(f, "sweep.storage", st, "a directory or a URI such as s3://bucket/path")
    if not is_uri(st):
        st = str(Path(st).expanduser().resolve())
    default_name = Path(f).stem if f != "<config>" else "sweep"
    nm = name if name is not None else sweep.get("name", default_name)
    if not isinstance(nm, str) or not NAME_RE.match(nm):
        raise ConfigError(f, "sweep.name", nm, "a name of letters, digits, _ . -")
    base = {k: copy.deepcopy(v) for k, v in cfg.raw.items()
            if k not in ("sweep", "optuna", "evaluate")}
    # trials run in their own working directory (maybe on another node): pin relative paths
    if cfg.space.endswith((".yaml", ".yml")) and Path(cfg.space).exists():
        base["space"] = str(Path(cfg.space).resolve())
    root = (base.get("data") or {}).get("root")
    if isinstance(root, str) and not is_uri(root) and not Path(root).expanduser().is_absolute():
        base["data"] = dict(base["data"], root=str(Path(root).expanduser().resolve()))
    study = Study(base=base, source=f, methods=[], seeds=seed_list,
                  resources=_resources(f, sweep.get("resources")), max_concurrent=mc,
                  max_failures=mf, storage=st, name=nm)
    study.methods = expand_methods(cfg, sweep, f)
    if "skip_invalid" in sweep and "benchmarks" not in sweep:
        raise ConfigError(f, "sweep.skip_invalid", sweep["skip_invalid"],
                          "only with sweep.benchmarks (it skips a method on a benchmark)")
    if "benchmarks" in sweep:
        return parse_suite(study, cfg, sweep, parse_study)
    for m in list(study.methods):  # every method must be a valid experiment: resolve once
        try:
            m.epochs = study.trial_config(m, seed_list[0]).epochs
        except ConfigError as e:
            if on_method_error is None:
                raise
            on_method_error(m, e)
            study.methods.remove(m)
    study.scheduler = parse_scheduler(sweep.get("scheduler"), [m.epochs for m in study.methods],
                                      f)
    study.evaluate = parse_stage(cfg.evaluate, cfg, f)
    n_random = parse_baseline(sweep.get("baseline"), study.evaluate, f)
    if study.evaluate is not None:
        study.evaluate.random = n_random
    if cfg.optuna is not None:
        study.optuna = parse_optuna(cfg.optuna, f, study.methods, study.evaluate,
                                    study.trial_config)
    study.race = parse_race(sweep.get("race"), f, evaluate=study.evaluate,
                            n_methods=len(study.methods), seeds_given="seeds" in sweep,
                            optuna=study.optuna)
    if study.race is not None:  # the race hands out seeds 0, 1, ... up to max_seeds
        study.seeds = list(range(study.race.max_seeds))
    return study


def check_fits(study: Study, nodes: list[dict[str, float]]) -> None:
    """Raise if no node of the cluster can hold one trial's resources (before any trial starts).

    ``nodes`` are Ray's per-node resource totals (``ray.nodes()[i]["Resources"]``). A cluster
    that autoscales may start nodes later: pass the node types it can launch instead.
    """
    need = study.resources
    have = [(n.get("CPU", 0.0), n.get("GPU", 0.0)) for n in nodes]
    if any(c >= need["cpu"] and g >= need["gpu"] for c, g in have):
        return
    best = ", ".join(f"{{cpu: {c:g}, gpu: {g:g}}}" for c, g in have) or "no nodes"
    raise ConfigError(study.source, "sweep.resources", {k: v for k, v in need.items()},
                      f"at most what one node has ({best})")
