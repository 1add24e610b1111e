"""Schedule axis: when α takes a step.

``wants_step(st)`` is asked before every weight step; ``observe(st, grad_sq_norm)`` is told the
squared norm of the weight gradient of that step (before clipping) when ``needs_grad_norm``.
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry

SCHEDULES: Registry["Schedule"] = Registry("schedule")


class Schedule:
    needs_grad_norm: bool = False

    def wants_step(self, st: Any) -> bool:
        raise NotImplementedError

    def did_step(self, st: Any, stepped: bool) -> None:
        """Told after each weight step whether an α step was taken before it."""

    def observe(self, st: Any, grad_sq_norm: float) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@SCHEDULES.register("every")
class Every(Schedule):
    """DARTS: one α step before every weight step."""

    def wants_step(self, st):
        return True
