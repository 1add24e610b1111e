"""The ``sweep.race:`` block: seeds raced on the validation truth (:mod:`raydnas.reduce.race`)::

    sweep:
      race:
        min_seeds: 3            # every method's first round (>= 2: a variance needs two)
        max_seeds: 10           # at most this many seeds per method
        seeds_per_round: 1      # more seeds per round for the methods still in contention
        confidence: 0.95        # of every elimination, over the whole race
        top_k: 1                # decide the best (or the top k)
        metric: eval_val_acc    # the retrained cells' validation accuracy (never a test metric)
        alpha_spending: bonferroni   # or none: every round at 1 - confidence (F-race)
        futility: null          # e.g. 2: stop undecided when the seeds each that would decide
                                # exceed 2 x max_seeds (a planning estimate; off by default)
    evaluate: {...}             # required: the race runs on retrained cells

Every problem is one :class:`~raydnas.errors.ConfigError` line, before anything starts.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, one_of, require_int
from ..reduce.decide import MAX_SEEDS
from ..reduce.race import RaceRules
from .optuna_spec import EVAL_METRICS, TEST_METRICS

RACE_KEYS = ("min_seeds", "max_seeds", "seeds_per_round", "confidence", "top_k", "metric",
             "alpha_spending", "futility")


def parse_race(block: Any, f: str, *, evaluate: Any, n_methods: int, seeds_given: bool,
               optuna: Any) -> RaceRules | None:
    """Validate ``sweep.race`` against the rest of the study (its evaluation stage, methods,
    ``sweep.seeds`` and ``optuna:``)."""
    if block is None:
        return None
    if not isinstance(block, dict):
        raise ConfigError(f, "sweep.race", block, "a mapping (min_seeds, max_seeds, ...)")
    for k, v in block.items():
        if k not in RACE_KEYS:
            raise ConfigError(f, f"sweep.race.{k}", v,
                              f"unknown key; allowed: {', '.join(RACE_KEYS)}")
    d = RaceRules()
    mn = require_int(f, "sweep.race.min_seeds", block.get("min_seeds", d.min_seeds), 2,
                     "an integer >= 2 (a variance needs two seeds)")
    mx = require_int(f, "sweep.race.max_seeds", block.get("max_seeds", d.max_seeds), 2)
    if mn > mx:
        raise ConfigError(f, "sweep.race.min_seeds", mn,
                          f"at most sweep.race.max_seeds ({mx})")
    per = require_int(f, "sweep.race.seeds_per_round",
                      block.get("seeds_per_round", d.seeds_per_round), 1)
    conf = block.get("confidence", d.confidence)
    if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0.5 < conf < 1:
        raise ConfigError(f, "sweep.race.confidence", conf, "a number in (0.5, 1), e.g. 0.95")
    top = require_int(f, "sweep.race.top_k", block.get("top_k", d.top_k), 1)
    metric = block.get("metric", d.metric)
    if metric in TEST_METRICS:
        raise ConfigError(f, "sweep.race.metric", metric,
                          "a validation truth (eval_val_acc): a race never selects on the "
                          "test split")
    one_of(f, "sweep.race.metric", metric, EVAL_METRICS)
    spend = block.get("alpha_spending", d.alpha_spending)
    one_of(f, "sweep.race.alpha_spending", spend, ("bonferroni", "none"))
    fut = block.get("futility", d.futility)
    if fut is not None and (isinstance(fut, bool) or not isinstance(fut, (int, float))
                            or not fut >= 1):
        raise ConfigError(f, "sweep.race.futility", fut,
                          "a number >= 1 (times max_seeds) or null (off)")
    if fut is not None and fut * mx >= MAX_SEEDS:
        raise ConfigError(f, "sweep.race.futility", fut,
                          f"below {MAX_SEEDS / mx:g} (futility x max_seeds < {MAX_SEEDS}, the "
                          "most seeds the power estimate counts)")
    if evaluate is None:
        raise ConfigError(f, "sweep.race", block,
                          "an evaluate: block as well: a race compares retrained cells")
    if not evaluate.protocol.val_fraction:
        raise ConfigError(f, "sweep.race.metric", metric,
                          "an evaluate: protocol with val_fraction > 0 (eval_val_acc is "
                          "measured on that part)")
    if seeds_given:
        raise ConfigError(f, "sweep.seeds", "set",
                          "absent with sweep.race: the race gives seeds 0, 1, ... up to "
                          "race.max_seeds")
    if optuna is not None:
        raise ConfigError(f, "sweep.race", block,
                          "absent with an optuna: block (racing Optuna points is not built "
                          "yet): race the methods, or tune them without a race")
    if top >= n_methods:
        raise ConfigError(f, "sweep.race.top_k", top,
                          f"fewer than the study's {n_methods} method(s)")
    return RaceRules(mn, mx, per, float(conf), top, metric, spend,
                     None if fut is None else float(fut))
