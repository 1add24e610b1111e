"""What the sampled activations share to give α a score-function gradient (UNAS, Vahdat et al.,
CVPR 2020; :mod:`raydnas.axes.estimators`): the ``estimator`` option, the draw of the last
training forward per α (no graph kept), and REINFORCE's moving-average baseline.

REINFORCE applies to any activation whose op weights are a draw w with a density q_α(w): the
weights are the draw itself (no pathwise gradient) and α's gradient is (L − c)·∇ log q_α(w).
``gumbel_hard`` draws a discrete one-hot b (q = Cat(softmax α)); ``gumbel`` a Concrete
sample (Maddison et al. 2017); ``dirichlet`` a Dirichlet one. REBAR and RELAX need a discrete
sample and its relaxation, so only ``gumbel_hard`` offers them.
"""

from __future__ import annotations

from typing import Any

import torch

from .checks import require


class ScoreDraws:
    """Mixin of a sampled activation: :meth:`_init_score` once in ``__init__``; the subclass
    keeps each training draw (:meth:`_keep_draw`) and turns the draws of the forward that gave
    the α objective into a surrogate (:meth:`_take_draws`, :meth:`_reinforce`)."""

    def _init_score(self, estimator: str, allowed: tuple[str, ...],
                    baseline_decay: float) -> None:
        require(estimator in allowed, "estimator", estimator, ", ".join(allowed))
        require(isinstance(baseline_decay, (int, float)) and 0 <= baseline_decay < 1,
                "baseline_decay", baseline_decay, "a number in [0, 1)")
        self.estimator, self.baseline_decay = estimator, float(baseline_decay)
        #: α's gradient comes from :meth:`score_term`, not through the weights
        self.score_function = estimator != "relaxed"
        self._drawn: dict[int, Any] = {}  # α's id -> its last training draw (no graph)
        self._baseline: float | None = None

    def _keep_draw(self, alpha: torch.Tensor, draw: Any) -> None:
        self._drawn[id(alpha)] = draw

    def _forget_draws(self) -> None:
        """A measurement forward: no α step will score its draw."""
        self._drawn = {}

    def _take_draws(self, alphas: dict[str, torch.Tensor]) -> dict[str, Any] | None:
        """The draws of every α in ``alphas`` (cell type → draw), consumed; None if one of them
        has none (no training forward since the last step, or a deterministic estimator)."""
        drawn = {ct: self._drawn.get(id(a)) for ct, a in alphas.items()}
        if not self.score_function or any(d is None for d in drawn.values()):
            return None
        self._drawn = {}
        return drawn

    def _reinforce(self, loss: float, logp: torch.Tensor) -> torch.Tensor:
        """(L − c)·log q with c the moving average of past L (c = L at the first step), then
        updated: c ← decay·c + (1 − decay)·L."""
        c = loss if self._baseline is None else self._baseline
        self._baseline = self.baseline_decay * c + (1 - self.baseline_decay) * loss
        return (loss - c) * logp

    def _score_state(self) -> dict[str, Any]:
        return {"baseline": self._baseline}

    def _load_score_state(self, state: dict[str, Any]) -> None:
        self._baseline = state.get("baseline")
