"""The study config: ``sweep:`` and ``optuna:`` blocks of an experiment YAML → a validated :class:`Study`.

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
import inspect
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import AXIS_NAMES, ExperimentConfig, apply_overrides, from_dict
from ..errors import ConfigError, one_of

SWEEP_KEYS = ("grid", "methods", "seeds", "resources", "max_concurrent", "max_failures",
              "storage", "name")
OPTUNA_KEYS = ("params", "n_trials", "metric", "mode", "aggregate", "robust_k", "sampler", "seed",
               "storage")
DISTRIBUTIONS = {
    "uniform": "a float uniform in [low, high]",
    "log_uniform": "a float log-uniform in [low, high], low > 0",
    "int": "an integer uniform in [low, high]",
    "int_log": "an integer log-uniform in [low, high], low >= 1",
    "choice": "one of a list of values",
}
SAMPLERS = ("tpe", "random", "cmaes", "gp", "nsga2", "qmc")
AGGREGATES = ("mean", "median", "min", "max", "robust")
MODES = ("max", "min")
#: Ray Tune reserves these characters in experiment names (they become directory names)
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass
class Method:
    """One point on the four axes (plus optional config overrides), the unit Optuna tunes."""

    name: str                         # the ``method`` key of every trial of this method
    axes: dict[str, Any]              # axis -> raw value (a name or {name: ..., params})
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> value
    params: list[str] = field(default_factory=list)          # Optuna params that apply

    def choices(self) -> dict[str, str]:
        return {a: (v if isinstance(v, str) else v["name"]) for a, v in self.axes.items()}


@dataclass
class Param:
    """One Optuna parameter: a dotted config key and its distribution."""

    key: str
    kind: str
    args: list[Any]

    def distribution(self):
        """The Optuna distribution object."""
        from optuna import distributions as D

        if self.kind == "uniform":
            return D.FloatDistribution(float(self.args[0]), float(self.args[1]))
        if self.kind == "log_uniform":
            return D.FloatDistribution(float(self.args[0]), float(self.args[1]), log=True)
        if self.kind == "int":
            return D.IntDistribution(int(self.args[0]), int(self.args[1]))
        if self.kind == "int_log":
            return D.IntDistribution(int(self.args[0]), int(self.args[1]), log=True)
        return D.CategoricalDistribution(list(self.args))


@dataclass
class OptunaSpec:
    params: list[Param]
    n_trials: int = 8
    metrics: list[str] = field(default_factory=lambda: ["discrete_val_acc"])
    modes: list[str] = field(default_factory=lambda: ["max"])
    aggregate: str = "mean"
    sampler: str = "tpe"
    seed: int | None = 0
    storage: str | None = None
    robust_k: float = 1.0


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
    optuna: OptunaSpec | None = None
    evaluate: Any = None              # raydnas.sweep.stage.EvalStage, or None

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
        if "://" in self.storage:  # remote experiment storage: keep the journal on the driver
            return str(Path.home() / "raydnas-optuna" / f"{self.name}.journal")
        return str(Path(self.experiment_path) / "optuna.journal")

    def study_name(self, method: Method) -> str:
        return f"{self.name}/{method.name}"

    def search_trials(self) -> int:
        if self.optuna is None:
            return len(self.methods) * len(self.seeds)
        return sum(self.points(m) for m in self.methods) * len(self.seeds)

    def total_trials(self) -> int:
        """Search trials, plus one evaluation trial per finished search and evaluation seed."""
        n = self.search_trials()
        return n * (1 + len(self.evaluate.seeds)) if self.evaluate is not None else n

    def points(self, method: Method) -> int:
        """Optuna points for a method: ``n_trials``, or 1 if no parameter applies to it."""
        if self.optuna is None:
            return 1
        return self.optuna.n_trials if method.params else 1

    def trial_raw(self, method: Method, seed: int, params: dict[str, Any] | None = None) -> dict:
        """The raw experiment mapping of one trial (validate it with ``from_dict``)."""
        raw = copy.deepcopy(self.base)
        for a, v in method.axes.items():
            raw[a] = copy.deepcopy(v)
        items = [f"{k}={_yaml_scalar(v)}" for k, v in method.overrides.items()]
        items += [f"{k}={_yaml_scalar(v)}" for k, v in (params or {}).items()]
        raw = apply_overrides(raw, items, source=self.source) if items else raw
        raw["seed"] = int(seed)
        return raw

    def trial_config(self, method: Method, seed: int,
                     params: dict[str, Any] | None = None) -> ExperimentConfig:
        return from_dict(self.trial_raw(method, seed, params), self.source)


def _yaml_scalar(v: Any) -> str:
    import yaml

    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("\n...").strip()


def _int(f: str, key: str, v: Any, lo: int, what: str | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(f, key, v, what or f"an integer >= {lo}")
    return v


def _axis_names(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, dict) and isinstance(v.get("name"), str):
        return v["name"]
    return None


def _check_choice(f: str, key: str, axis: str, v: Any) -> None:
    from ..axes import AXES

    name = _axis_names(v)
    reg = AXES[axis]
    if name is None:
        raise ConfigError(f, key, v, f"a name ({', '.join(reg.names())}) or a mapping with 'name'")
    if name not in reg:
        raise ConfigError(f, key, name, f"one of {', '.join(reg.names())}")


def _methods(cfg: ExperimentConfig, sweep: dict, f: str) -> list[Method]:
    base_axes = {a: copy.deepcopy(cfg.raw.get(a)) if cfg.raw.get(a) is not None
                 else getattr(cfg, a).name for a in AXIS_NAMES}
    out: list[Method] = []
    grid = sweep.get("grid")
    if grid is not None:
        if not isinstance(grid, dict) or not grid:
            raise ConfigError(f, "sweep.grid", grid, "a mapping of axis to a list of choices")
        for axis, choices in grid.items():
            if axis not in AXIS_NAMES:
                raise ConfigError(f, f"sweep.grid.{axis}", choices,
                                  f"unknown axis; allowed: {', '.join(AXIS_NAMES)}")
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f, f"sweep.grid.{axis}", choices, "a non-empty list of choices")
            for i, c in enumerate(choices):
                _check_choice(f, f"sweep.grid.{axis}[{i}]", axis, c)
        axes = list(grid)
        for combo in itertools.product(*(grid[a] for a in axes)):
            m = dict(base_axes)
            for a, c in zip(axes, combo):
                # a bare name equal to the base's choice keeps the base's hyperparameters
                if isinstance(c, str) and _axis_names(base_axes[a]) == c:
                    continue
                m[a] = copy.deepcopy(c)
            out.append(Method("", m))
    listed = sweep.get("methods")
    if listed is not None:
        if not isinstance(listed, list) or not listed:
            raise ConfigError(f, "sweep.methods", listed, "a non-empty list of methods")
        for i, entry in enumerate(listed):
            key = f"sweep.methods[{i}]"
            if not isinstance(entry, dict):
                raise ConfigError(f, key, entry, "a mapping of axis to choice (plus name, set)")
            m = dict(base_axes)
            name, sets = "", {}
            for k, v in entry.items():
                if k == "name":
                    if not isinstance(v, str) or not _NAME_RE.match(v.replace("/", "_")):
                        raise ConfigError(f, f"{key}.name", v, "a name of letters, digits, _ . - /")
                    name = v
                elif k == "set":
                    if not isinstance(v, dict):
                        raise ConfigError(f, f"{key}.set", v, "a mapping of dotted config key to value")
                    sets = dict(v)
                elif k in AXIS_NAMES:
                    _check_choice(f, f"{key}.{k}", k, v)
                    m[k] = copy.deepcopy(v)
                else:
                    raise ConfigError(f, f"{key}.{k}", v,
                                      f"unknown key; allowed: {', '.join(AXIS_NAMES)}, name, set")
            out.append(Method(name, m, sets))
    if not out:
        out.append(Method("", base_axes))
    seen: dict[str, int] = {}
    for i, m in enumerate(out):
        if not m.name:
            m.name = "/".join(m.choices()[a] for a in AXIS_NAMES)
        if m.name in seen:
            raise ConfigError(f, "sweep.methods", m.name,
                              "each method once; give variants of one method a distinct 'name'")
        seen[m.name] = i
    return out


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


def _param(f: str, key: str, spec: Any) -> Param:
    where = f"optuna.params.{key}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f, where, spec,
                          f"one distribution: {{{' | '.join(DISTRIBUTIONS)}: [low, high]}}")
    kind, args = next(iter(spec.items()))
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f, f"{where}.{kind}", args, f"one of {', '.join(DISTRIBUTIONS)}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f, f"{where}.choice", args, "a non-empty list of values")
        return Param(key, kind, list(args))
    numeric = (lambda x: isinstance(x, int) and not isinstance(x, bool)) if kind.startswith("int") \
        else (lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x))
    if not isinstance(args, list) or len(args) != 2 or not all(numeric(x) for x in args):
        what = "integers" if kind.startswith("int") else "numbers"
        raise ConfigError(f, f"{where}.{kind}", args, f"[low, high], two {what}")
    lo, hi = args
    if lo > hi:
        raise ConfigError(f, f"{where}.{kind}", args, "low <= high")
    if kind == "log_uniform" and lo <= 0:
        raise ConfigError(f, f"{where}.{kind}", args, "low > 0 for a log-uniform distribution")
    if kind == "int_log" and lo < 1:
        raise ConfigError(f, f"{where}.{kind}", args, "low >= 1 for a log-scaled integer")
    return Param(key, kind, [lo, hi])


def _applies(study: Study, method: Method, p: Param) -> bool:
    """Whether parameter ``p`` names a config key of ``method`` (an axis hyperparameter of the
    method's choice on that axis, or any other config key)."""
    from ..axes import AXES

    head, _, rest = p.key.partition(".")
    if head in AXIS_NAMES:
        if not rest or "." in rest or rest == "name":
            return False
        cls = AXES[head].get(method.choices()[head])
        return rest in inspect.signature(cls).parameters
    return True


def _first_value(p: Param) -> Any:
    return p.args[0]


def _optuna(cfg: ExperimentConfig, study: Study, o: dict, f: str) -> OptunaSpec:
    for k, v in o.items():
        if k not in OPTUNA_KEYS:
            raise ConfigError(f, f"optuna.{k}", v, f"unknown key; allowed: {', '.join(OPTUNA_KEYS)}")
    params = o.get("params")
    if not isinstance(params, dict) or not params:
        raise ConfigError(f, "optuna.params", params,
                          "a mapping of dotted config key to a distribution, "
                          "e.g. {regularizer.rho: {log_uniform: [1.0e-4, 1.0]}}")
    plist = []
    for key, spec in params.items():
        if not isinstance(key, str) or key.split(".")[0] in ("seed", "sweep", "optuna", "evaluate",
                                                             "space"):
            raise ConfigError(f, f"optuna.params.{key}", spec,
                              "a tunable config key (not seed, space, sweep or optuna)")
        p = _param(f, key, spec)
        users = [m for m in study.methods if _applies(study, m, p)]
        if not users:
            names = ", ".join(m.name for m in study.methods)
            raise ConfigError(f, f"optuna.params.{key}", spec,
                              f"a config key of at least one method ({names})")
        for m in users:  # the key must validate with a value from the distribution
            try:
                study.trial_config(m, 0, {key: _first_value(p)})
            except ConfigError as e:
                raise ConfigError(f, f"optuna.params.{key}", spec,
                                  f"not a valid config key for {m.name}: {e.key}: {e.allowed}") from None
            m.params.append(key)
        plist.append(p)
    n = _int(f, "optuna.n_trials", o.get("n_trials", 8), 1)
    metrics = o.get("metric", "discrete_val_acc")
    modes = o.get("mode", "max")
    metrics = metrics if isinstance(metrics, list) else [metrics]
    modes = modes if isinstance(modes, list) else [modes] * len(metrics)
    if not metrics or not all(isinstance(m, str) and m for m in metrics):
        raise ConfigError(f, "optuna.metric", o.get("metric"), "a metric name or a list of them")
    if len(modes) != len(metrics) or any(m not in MODES for m in modes):
        raise ConfigError(f, "optuna.mode", o.get("mode"),
                          f"max or min, or a list of them as long as optuna.metric")
    agg = one_of(f, "optuna.aggregate", o.get("aggregate", "mean"), AGGREGATES)
    k = o.get("robust_k", 1.0)
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k < 0:
        raise ConfigError(f, "optuna.robust_k", k, "a number >= 0 (aggregate robust: mean - k*std)")
    sampler = one_of(f, "optuna.sampler", o.get("sampler", "tpe"), SAMPLERS)
    if sampler == "cmaes" and len(metrics) > 1:
        raise ConfigError(f, "optuna.sampler", sampler, "a multi-objective sampler (tpe, nsga2, random)")
    seed = o.get("seed", 0)
    if seed is not None:
        _int(f, "optuna.seed", seed, 0, "an integer >= 0 or null")
    storage = o.get("storage")
    if storage is not None and (not isinstance(storage, str) or not storage):
        raise ConfigError(f, "optuna.storage", storage,
                          "a journal file path, or a database URL (sqlite:///..., postgresql://...)")
    if storage and "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    return OptunaSpec(plist, n, metrics, modes, agg, sampler, seed, storage, float(k))


def parse_study(cfg: ExperimentConfig, *, storage: str | None = None,
                name: str | None = None) -> Study:
    """Validate ``cfg``'s ``sweep``/``optuna`` blocks into a :class:`Study`.

    Args:
        cfg: a validated experiment config (its ``raw`` holds the blocks).
        storage: overrides ``sweep.storage`` (the CLI's ``--storage``).
        name: overrides ``sweep.name`` (the CLI's ``--name``).

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
            raise ConfigError(f, "sweep.seeds", seeds, "an integer >= 1 or a list of distinct seeds >= 0")
        seed_list = list(seeds)
    else:
        seed_list = list(range(_int(f, "sweep.seeds", seeds, 1,
                                    "an integer >= 1 or a list of distinct seeds >= 0")))
    mc = sweep.get("max_concurrent")
    if mc is not None:
        _int(f, "sweep.max_concurrent", mc, 1, "an integer >= 1 or null")
    mf = _int(f, "sweep.max_failures", sweep.get("max_failures", 2), 0)
    st = storage if storage is not None else sweep.get("storage", "runs/sweeps")
    if not isinstance(st, str) or not st:
        raise ConfigError(f, "sweep.storage", st, "a directory or a URI such as s3://bucket/path")
    if "://" not in st:
        st = str(Path(st).expanduser().resolve())
    nm = name if name is not None else sweep.get("name", Path(f).stem if f != "<config>" else "sweep")
    if not isinstance(nm, str) or not _NAME_RE.match(nm):
        raise ConfigError(f, "sweep.name", nm, "a name of letters, digits, _ . -")
    base = {k: copy.deepcopy(v) for k, v in cfg.raw.items()
            if k not in ("sweep", "optuna", "evaluate")}
    # trials run in their own working directory (maybe on another node): pin relative paths
    if cfg.space.endswith((".yaml", ".yml")) and Path(cfg.space).exists():
        base["space"] = str(Path(cfg.space).resolve())
    root = (base.get("data") or {}).get("root")
    if isinstance(root, str) and "://" not in root and not Path(root).expanduser().is_absolute():
        base["data"] = dict(base["data"], root=str(Path(root).expanduser().resolve()))
    study = Study(base=base, source=f, methods=[], seeds=seed_list,
                  resources=_resources(f, sweep.get("resources")), max_concurrent=mc,
                  max_failures=mf, storage=st, name=nm)
    study.methods = _methods(cfg, sweep, f)
    for m in study.methods:  # every method must be a valid experiment on its own
        study.trial_config(m, seed_list[0])
    if cfg.optuna is not None:
        study.optuna = _optuna(cfg, study, cfg.optuna, f)
    from .stage import parse_stage

    study.evaluate = parse_stage(cfg.evaluate, cfg, f)
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
