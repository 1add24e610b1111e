"""What a search trial reports to Tune each epoch: the metrics Tune itself reads, not all.

Tune keeps, in every trial's state, running statistics of every numeric key a trial reports
(``metric_n_steps``, ``metric_analysis``) and snapshots the state of every trial after every
trial checkpoint. With the ~40 numeric metrics of a search epoch that is ~28 kB per trial in
each snapshot, and the driver's snapshot work grows with the square of the trials
(``benchmarks/driver_scale.py``). So a search reports to Tune only what Tune and the sweep
read: the progress table's columns, the metrics a scheduler may use, the study's and Optuna's
objectives, and what the sweep's summary, evaluation stage and stop accounting read. The
whole epoch record stays in the trial's ``metrics.jsonl`` and ``final.json`` (which ``raydnas
reduce`` reads) and in its own TensorBoard logs (``tb/``).
"""

from __future__ import annotations

from typing import Any

from .scheduler import SEARCH_METRICS

#: always reported (besides every metric a scheduler may read and the study's objectives)
ALWAYS = ("epoch", "genotype", "early_stop", "stopped_reason", "epoch_seconds", "decided",
          "alpha_steps", "arch_params", "param_free_ops", "discrete_val_acc_tuned",
          "data_choice")  # the data axis' chosen input: its cell is retrained on it


def tune_keys(study: Any) -> frozenset[str]:
    """The keys of a search epoch that go to Tune for ``study``."""
    keys = set(ALWAYS) | set(SEARCH_METRICS) | {study.metric}
    if study.optuna is not None:
        keys |= set(study.optuna.metrics)
    if study.scheduler is not None:
        keys.add(study.scheduler.metric)
    return frozenset(keys)


def tune_view(metrics: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    """The part of one epoch's ``metrics`` that is reported to Tune."""
    return {k: v for k, v in metrics.items() if k in keys}
