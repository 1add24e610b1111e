"""The ``optuna:`` block of a study: parameters, their distributions, objectives, sampler."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..axes import AXES, AXIS_NAMES
from ..errors import ConfigError, one_of, require_int
from ..results.remote import is_uri
from .methods import Method

# Lazy imports: Optuna loads only when distributions are built, so a study is parsed and validated
# without it.

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
#: objectives that come from a point's evaluation trials (the retrained cells), not its searches
EVAL_METRICS = ("eval_val_acc",)
#: objectives that are never allowed: selection on the test split
TEST_METRICS = ("test_acc", "test_loss")
AGGREGATES = ("mean", "median", "min", "max", "robust")
MODES = ("max", "min")


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
    """A validated ``optuna:`` block."""
    params: list[Param]
    n_trials: int = 8
    metrics: list[str] = field(default_factory=lambda: ["discrete_val_acc"])
    modes: list[str] = field(default_factory=lambda: ["max"])
    aggregate: str = "mean"
    sampler: str = "tpe"
    seed: int | None = 0
    storage: str | None = None
    robust_k: float = 1.0


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
        else (lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)
              and math.isfinite(x))
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


def _applies(method: Method, p: Param) -> bool:
    """Whether parameter ``p`` names a config key of ``method`` (an axis hyperparameter of the
    method's choice on that axis, or any other config key)."""
    head, _, rest = p.key.partition(".")
    if head in AXIS_NAMES:
        if not rest or "." in rest or rest == "name":
            return False
        cls = AXES[head].get(method.choices()[head])
        return rest in inspect.signature(cls).parameters
    return True


def _names(key: str, error_key: Any) -> bool:
    """Whether an error about ``error_key`` is about the dotted config ``key``."""
    k = str(error_key)
    return k == key or k.startswith(key + ".") or key.startswith(k + ".")


def parse_optuna(o: dict, f: str, methods: list[Method], evaluate: Any,
                 trial_config: Callable[..., Any]) -> OptunaSpec:
    """Validate the ``optuna:`` block against the study's ``methods`` (each resolved once more
    by ``trial_config(method, seed, params)``); ``evaluate`` is the study's evaluation stage
    (or None), which a metric of the retrained cells needs."""
    for k, v in o.items():
        if k not in OPTUNA_KEYS:
            raise ConfigError(f, f"optuna.{k}", v,
                              f"unknown key; allowed: {', '.join(OPTUNA_KEYS)}")
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
        users = [m for m in methods if _applies(m, p)]
        if not users:
            names = ", ".join(m.name for m in methods)
            raise ConfigError(f, f"optuna.params.{key}", spec,
                              f"a config key of at least one method ({names})")
        for m in users:
            m.params.append(key)
        plist.append(p)
    first = {p.key: p.args[0] for p in plist}
    for m in methods:  # each method validates once, with a value of each of its keys
        if not m.params:
            continue
        try:
            trial_config(m, 0, {k: first[k] for k in m.params})
        except ConfigError as e:
            key = next((k for k in reversed(m.params) if _names(k, e.key)), m.params[-1])
            raise ConfigError(f, f"optuna.params.{key}", params[key],
                              f"not a valid config key for {m.name}: {e.key}: "
                              f"{e.allowed}") from None
    n = require_int(f, "optuna.n_trials", o.get("n_trials", 8), 1)
    metrics = o.get("metric", "discrete_val_acc")
    modes = o.get("mode", "max")
    metrics = metrics if isinstance(metrics, list) else [metrics]
    modes = modes if isinstance(modes, list) else [modes] * len(metrics)
    if not metrics or not all(isinstance(m, str) and m for m in metrics):
        raise ConfigError(f, "optuna.metric", o.get("metric"), "a metric name or a list of them")
    for m in metrics:
        if m in TEST_METRICS:
            raise ConfigError(f, "optuna.metric", m, "a validation metric (eval_val_acc, or a "
                              "search metric such as discrete_val_acc): selecting on the test "
                              "split makes its accuracy no longer a test accuracy")
        if m in EVAL_METRICS and evaluate is None:
            raise ConfigError(f, "optuna.metric", m, "a search metric (discrete_val_acc, "
                              "val_acc, ...), or add an evaluate: block: eval_val_acc is the "
                              "retrained cells' validation accuracy")
        if m in EVAL_METRICS and not evaluate.protocol.val_fraction:
            raise ConfigError(f, "optuna.metric", m, "a search metric, or an evaluate: "
                              f"protocol with val_fraction > 0 (protocol "
                              f"{evaluate.protocol.name} holds out no validation part; "
                              "evaluate: {set: {val_fraction: 0.2}})")
    if len(modes) != len(metrics) or any(m not in MODES for m in modes):
        raise ConfigError(f, "optuna.mode", o.get("mode"),
                          "max or min, or a list of them as long as optuna.metric")
    agg = one_of(f, "optuna.aggregate", o.get("aggregate", "mean"), AGGREGATES)
    k = o.get("robust_k", 1.0)
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k < 0:
        raise ConfigError(f, "optuna.robust_k", k, "a number >= 0 (aggregate robust: mean - k*std)")
    sampler = one_of(f, "optuna.sampler", o.get("sampler", "tpe"), SAMPLERS)
    if sampler == "cmaes" and len(metrics) > 1:
        raise ConfigError(f, "optuna.sampler", sampler,
                          "a multi-objective sampler (tpe, nsga2, random)")
    seed = o.get("seed", 0)
    if seed is not None:
        require_int(f, "optuna.seed", seed, 0, "an integer >= 0 or null")
    storage = o.get("storage")
    if storage is not None and (not isinstance(storage, str) or not storage):
        raise ConfigError(f, "optuna.storage", storage,
                          "a journal file path, or a database URL (sqlite:///..., postgresql://...)")
    if storage and not is_uri(storage):
        storage = str(Path(storage).expanduser().resolve())
    return OptunaSpec(plist, n, metrics, modes, agg, sampler, seed, storage, float(k))


