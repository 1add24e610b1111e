"""The one place that decides whether a search ends after this epoch (:func:`decide`).

It asks, in order, and the first :class:`~raydnas.stop.Stop` wins:

1. the method's parts (:meth:`raydnas.axes.AxisChoice.stop`: MiLeNAS's model-size target);
2. the ``stop:`` rules on the derived cell (:func:`raydnas.search.stop_rules.rule_stop`);
3. DARTS-ES on the Hessian eigenvalues measured so far (:func:`hessian_stop`).

The caller applies the decision: the record gets :meth:`Stop.record`'s keys, and a DARTS-ES stop
with ``stop.hessian_rollback`` ends the search with the cell of :attr:`Stop.cell_epoch`.
"""

from __future__ import annotations

from typing import Any

from ..stop import Reason, Stop
from .hessian import eigenvalue_stop
from .stop_rules import rule_stop


def decide(st: Any, m: dict[str, Any], genotype: Any) -> Stop | None:
    """Whether the search (a :class:`~raydnas.search.state.SearchState`) ends after the epoch
    whose record is ``m`` (``st.history`` holds the records before it) and whose derived cell
    is ``genotype``."""
    for part in st.parts.values():
        stop = part.stop(st, genotype, m)
        if stop is not None:
            return stop
    cfg = st.cfg
    return rule_stop(cfg.stop, st.history, m, genotype, cfg.epochs) or hessian_stop(st, m)


def hessian_stop(st: Any, m: dict[str, Any]) -> Stop | None:
    """DARTS-ES (``stop.hessian_factor``) on the eigenvalues of the earlier records and ``m``.

    Epochs here are the code's 0-based indices (the record's ``epoch`` − 1); the eigenvalues
    are those taken every ``measure.hessian_every`` epochs. Never at the last epoch (the search
    ran to its end). The stop's :attr:`~raydnas.stop.Stop.cell_epoch` is the (1-based) epoch
    whose cell the code returns, when this search has its record."""
    cfg, sc = st.cfg, st.cfg.stop
    every = cfg.measure.hessian_every
    if not every or sc.hessian_factor is None or m["epoch"] >= cfg.epochs \
            or "hessian_eigenvalue" not in m:
        return None
    values = [(h["epoch"] - 1, h["hessian_eigenvalue"]) for h in [*st.history, m]
              if "hessian_eigenvalue" in h and (h["epoch"] - 1) % every == 0]
    hit = eigenvalue_stop(values, every, sc.hessian_window, sc.hessian_delta, sc.hessian_factor,
                          sc.hessian_start_epoch)
    if hit is None:
        return None
    sentence, back = hit
    known = any(h["epoch"] - 1 == back for h in st.history)
    return Stop(Reason.HESSIAN, sentence, back + 1 if known else None)
