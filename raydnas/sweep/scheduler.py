"""``sweep.scheduler``: a Ray Tune trial scheduler over the study's search trials.

    sweep:
      scheduler: {name: asha, metric: discrete_val_acc, grace_epochs: 2, reduction_factor: 3}

* ``asha``: ``tune.schedulers.ASHAScheduler`` on the epoch (``time_attr: epoch``, ``max_t`` the
  longest method's epochs, ``grace_period`` = ``grace_epochs``, ``reduction_factor``, Tune's
  default 4): at each rung it stops the trials outside the top 1/``reduction_factor``.
* ``median``: ``tune.schedulers.MedianStoppingRule``: after ``grace_epochs`` it stops a trial
  whose best value so far is worse than the median of the other trials' running means at that
  epoch (``min_samples_required`` 3 of them).

Both compare trials **across methods and seeds**: a method that looks worse early loses its
seeds, so the study's verdict then rests partly on an early proxy. The stop rules of ``stop:``
(:mod:`raydnas.search.stop_rules`) need no comparison. Evaluation trials report no search metric and
are left alone. A stopped search is recorded as ``stopped`` (reason ``scheduler``) in the
report, and with Optuna its point is told PRUNED.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

# Lazy imports: Ray Tune's schedulers load only when a study runs; parsing a scheduler block needs
# none.

#: what every search trial reports every epoch (the metrics a scheduler may read), and the
#: direction in which each is better
SEARCH_METRICS = {"val_acc": "max", "discrete_val_acc": "max", "train_acc": "max",
                  "alpha_margin_mean": "max", "alpha_margin_min": "max",
                  "val_loss": "min", "discrete_val_loss": "min", "train_loss": "min",
                  "discretization_gap": "min", "distance_to_discrete": "min",
                  "alpha_entropy": "min"}
NAMES = ("asha", "median")
KEYS = {"asha": ("name", "metric", "mode", "grace_epochs", "reduction_factor"),
        "median": ("name", "metric", "mode", "grace_epochs", "min_samples_required")}


@dataclass
class SchedulerSpec:
    """A validated ``sweep.scheduler`` block."""

    name: str
    metric: str
    mode: str
    grace_epochs: int
    reduction_factor: float = 4.0
    min_samples_required: int = 3
    max_epochs: int = 1

    def build(self):
        """The Tune scheduler (metric and mode go to ``TuneConfig``, as Tune requires)."""
        from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

        if self.name == "asha":
            return ASHAScheduler(time_attr="epoch", max_t=self.max_epochs,
                                 grace_period=self.grace_epochs,
                                 reduction_factor=self.reduction_factor)
        return MedianStoppingRule(time_attr="epoch", grace_period=self.grace_epochs,
                                  min_samples_required=self.min_samples_required)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_scheduler(raw: Any, epochs: list[int], f: str) -> SchedulerSpec | None:
    """Validate ``sweep.scheduler`` (``epochs``: every method's epochs) or raise one line."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f, "sweep.scheduler", raw, f"a mapping with a name ({', '.join(NAMES)})")
    name = raw["name"]
    if name not in NAMES:
        raise ConfigError(f, "sweep.scheduler.name", name, f"one of {', '.join(NAMES)}")
    for k, v in raw.items():
        if k not in KEYS[name]:
            raise ConfigError(f, f"sweep.scheduler.{k}", v, f"unknown key of scheduler "
                              f"{name!r}; allowed: {', '.join(KEYS[name])}")
    metric = raw.get("metric", "discrete_val_acc")
    if metric not in SEARCH_METRICS:
        raise ConfigError(f, "sweep.scheduler.metric", metric,
                          f"a metric every search trial reports each epoch: "
                          f"{', '.join(SEARCH_METRICS)}")
    mode = raw.get("mode", SEARCH_METRICS[metric])
    if mode not in ("max", "min"):
        raise ConfigError(f, "sweep.scheduler.mode", mode, "max or min")
    grace = raw.get("grace_epochs", 1)
    shortest = min(epochs)
    if not _int(grace) or grace < 1 or grace >= shortest:
        raise ConfigError(f, "sweep.scheduler.grace_epochs", grace,
                          f"an integer in [1, {shortest - 1}]: fewer than the shortest method's "
                          f"{shortest} epochs")
    spec = SchedulerSpec(name, metric, mode, grace, max_epochs=max(epochs))
    if name == "asha":
        rf = raw.get("reduction_factor", 4)
        if not isinstance(rf, (int, float)) or isinstance(rf, bool) or rf <= 1:
            raise ConfigError(f, "sweep.scheduler.reduction_factor", rf, "a number > 1")
        spec.reduction_factor = float(rf)
    else:
        ms = raw.get("min_samples_required", 3)
        if not _int(ms) or ms < 1:
            raise ConfigError(f, "sweep.scheduler.min_samples_required", ms, "an integer >= 1")
        spec.min_samples_required = ms
    return spec
