"""Why a search ended before its last epoch: one typed decision, :class:`Stop`.

Three things can end a search early, and :func:`raydnas.search.stopping.decide` asks them in this
order at the end of every epoch: a method part (MiLeNAS's model-size target, the hook
:meth:`raydnas.axes.AxisChoice.stop`), the ``stop:`` rules that judge the derived cell
(:mod:`raydnas.search.stop_rules`), and DARTS-ES on the Hessian eigenvalue
(:mod:`raydnas.search.hessian`). The first :class:`Stop` wins.

On disk a stop is two keys of the epoch's record (the format every reader of ``metrics.jsonl``
knows): ``early_stop`` (the sentence) and, for a stop rule, ``stopped_reason`` (its code). A
search that reached its method's own end (:attr:`Reason.SIZE_TARGET`) carries no
``stopped_reason``: it is a complete search, not one a rule cut short.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class Reason(str, Enum):
    """What ended a search early (the value is the code recorded as ``stopped_reason``)."""

    DEAD = "dead"  # stop.dead: the derived cell has no path from an input to the output
    COLLAPSED = "collapsed"  # stop.collapsed: parameter-free ops dominate the normal cell
    MARGIN_STALLED = "margin_stalled"  # stop.margin_stall_*: α does not leave its start
    HESSIAN = "hessian"  # stop.hessian_factor: DARTS-ES
    SIZE_TARGET = "size_target"  # gradient.early_stop_at: MiLeNAS's model-size target

    @property
    def ends_complete(self) -> bool:
        """The method's own end (a complete search), not a rule that cut it short."""
        return self is Reason.SIZE_TARGET


@dataclass(frozen=True)
class Stop:
    """A decision to end the search after this epoch.

    Args:
        reason: what ended it.
        sentence: the human-readable why, recorded as ``early_stop``.
        cell_epoch: DARTS-ES only: the (1-based) epoch whose derived cell the method returns
            (with ``stop.hessian_rollback`` the search ends with that cell).
    """

    reason: Reason
    sentence: str
    cell_epoch: int | None = None

    def record(self) -> dict[str, Any]:
        """The keys this stop adds to the epoch's record."""
        out: dict[str, Any] = {"early_stop": self.sentence}
        if not self.reason.ends_complete:
            out["stopped_reason"] = self.reason.value
        return out


def ended(record: dict[str, Any] | None) -> bool:
    """Whether an epoch's record (a ``metrics.jsonl`` line) is the last of a stopped search."""
    return bool(record and record.get("early_stop"))
