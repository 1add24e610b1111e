"""Stop rules that need no comparison between trials (``stop:`` of an experiment): a search
whose derived cell has already failed ends early, with its reason recorded.

Each rule reads the epoch's record (and the history before it); the first that fires gives a
:class:`~raydnas.stop.Stop` (:func:`rule_stop`), which :func:`raydnas.search.stopping.decide`
weighs with the method's own end and DARTS-ES. The record then carries ``early_stop`` (a
sentence) and ``stopped_reason`` (the code): the sweep's report counts such a trial as stopped
for that reason (``raydnas.reduce``), never as a search that ran to its end.

* ``dead``: the derived cell is cut off from its inputs (``Genotype.dead_cells``: no path of
  non-``none`` edges from an input to the output), so its network outputs a constant;
* ``collapsed``: the normal cell's live ops are parameter-free (skip, pools) in at least this
  share (the report's ``collapse_rate`` uses 0.5; a rule that ends searches wants a higher
  share, e.g. 1.0 for a normal cell without a single op with weights);
* ``margin_stalled``: the mean α margin (``alpha_margin_mean``) moved by less than
  ``margin_stall_delta`` over the last ``margin_stall_epochs`` epochs while the search is
  undecided (mean margin below ``DECIDED_MARGIN``): α is not leaving its initialization.

Rules apply from epoch ``rules_min_epochs`` on (the first epochs' cells are noise) and never at
the last epoch (a search that ends then ran to its end).
"""

from __future__ import annotations

from typing import Any

from ..model.cells import live_param_free_share
from ..stop import Reason, Stop
from .metrics import DECIDED_MARGIN

#: what each rule's stop says (the start of the sentence recorded as ``early_stop``)
REASONS = {Reason.DEAD: "the derived cell is dead (no path from an input to the output)",
           Reason.COLLAPSED: "the normal cell collapsed onto parameter-free ops",
           Reason.MARGIN_STALLED: "the α margin stalled while undecided"}


def check(stop: Any, history: list[dict[str, Any]], m: dict[str, Any], genotype: Any,
          epochs: int) -> Reason | None:
    """The reason of the first rule of ``stop`` (a
    :class:`~raydnas.config.experiment.StopConfig`)
    that fires at this epoch's record ``m`` (``history``: the records before it), or None."""
    e = m["epoch"]
    if e >= epochs or e < stop.rules_min_epochs:
        return None
    if stop.dead and genotype.dead_cells():
        return Reason.DEAD
    if stop.collapsed is not None:
        share = live_param_free_share(genotype, "normal")
        if share == share and share >= stop.collapsed:  # NaN: no live op (dead, above)
            return Reason.COLLAPSED
    k = stop.margin_stall_epochs
    if k and len(history) >= k and m["alpha_margin_mean"] < DECIDED_MARGIN:
        past = history[-k]["alpha_margin_mean"]
        if abs(m["alpha_margin_mean"] - past) < stop.margin_stall_delta:
            return Reason.MARGIN_STALLED
    return None


def sentence(reason: Reason, m: dict[str, Any], stop: Any) -> str:
    """The ``early_stop`` text of a rule's stop at record ``m``."""
    extra = ""
    if reason is Reason.COLLAPSED:
        extra = f" (share >= {stop.collapsed:g})"
    elif reason is Reason.MARGIN_STALLED:
        extra = (f" (mean margin {m['alpha_margin_mean']:.3f}, moved < "
                 f"{stop.margin_stall_delta:g} in {stop.margin_stall_epochs} epochs)")
    return f"stop.{reason.value}: {REASONS[reason]}{extra} after epoch {m['epoch']}"


def rule_stop(stop: Any, history: list[dict[str, Any]], m: dict[str, Any], genotype: Any,
              epochs: int) -> Stop | None:
    """The :class:`~raydnas.stop.Stop` of the first rule that fires (:func:`check`), or None."""
    reason = check(stop, history, m, genotype, epochs)
    return None if reason is None else Stop(reason, sentence(reason, m, stop))
