"""Schedule axis: when α takes a step.

``wants_step(ctx)`` is asked before every weight step; ``observe(ctx, grad_sq_norm)`` is told
the squared norm of the weight gradient of that step (before clipping) when ``needs_grad_norm``.
A schedule may ask for its own train/val split (``requested_val_fraction``; config applies it).
"""

from __future__ import annotations

from ..registry import Registry
from .base import AxisChoice, SearchContext
from .checks import is_number, require

SCHEDULES: Registry["Schedule"] = Registry("schedule", default="every")


class Schedule(AxisChoice):
    """Base class: :meth:`wants_step` decides, :meth:`observe` is told the gradient norm."""

    #: the loop computes Σ‖∇w‖² of every weight step and passes it to :meth:`observe`
    needs_grad_norm: bool = False
    #: α is stepped at all (False: ``never``)
    steps_alpha: bool = True

    def wants_step(self, ctx: SearchContext) -> bool:
        """Asked once before every weight step: take an α step first? (May update state.)"""
        raise NotImplementedError

    def observe(self, ctx: SearchContext, grad_sq_norm: float) -> None:
        """After each weight step's backward, when ``needs_grad_norm``: Σ_p ‖∇_p L_train‖²
        over all weights, before clipping."""


def _int_ge(v, lo):
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


@SCHEDULES.register("never")
class Never(Schedule):
    """α is never stepped: the supernet's weights train alone (random search with weight
    sharing, the ``random_ws`` preset); only with an activation that takes no α
    (``alpha_free``, :mod:`raydnas.axes.compat`)."""

    steps_alpha = False

    def wants_step(self, ctx):
        return False


@SCHEDULES.register("every")
class Every(Schedule):
    """DARTS: one α step before every weight step."""

    def wants_step(self, ctx):
        return True


@SCHEDULES.register("interval")
class Interval(Schedule):
    """An α step before every s-th weight step, after optional warm-up epochs without α steps.

    Counting starts after the warm-up: α steps before weight steps s, 2s, ... (Maile et al.'s
    static alternative ``(step + 1) % s == 0``). With ``implicit`` this is iDARTS's T = s inner
    weight steps per α step.

    Args:
        every: s, weight steps per α step (default 1 = ``every``; iDARTS T = 4 on NB201, 5 on
            NAS-Bench-1Shot1).
        warmup_epochs: epochs of weights-only training first (default 0).
    """

    def __init__(self, every: int = 1, warmup_epochs: int = 0) -> None:
        require(_int_ge(every, 1), "every", every, "an integer >= 1")
        require(_int_ge(warmup_epochs, 0), "warmup_epochs", warmup_epochs, "an integer >= 0")
        self.every, self.warmup_epochs = every, warmup_epochs

    def wants_step(self, ctx):
        if ctx.epoch < self.warmup_epochs:
            return False
        k = ctx.step - self.warmup_epochs * ctx.steps_per_epoch
        return (k + 1) % self.every == 0


@SCHEDULES.register("informed")
class Informed(Schedule):
    """Maile et al. 2021: DARTS-PRIME's "dynamic"/informed schedule
    (``train_scheduled_hard_statebn``).

    F = Σ_p ‖∇_p L_train‖² over all weights, after the backward and before clipping;
    F̄ ← β·F + (1 − β)·F̄ (F̄ = F at the first step). Before each weight step: if 0 < F̄ < τ take an
    α step and τ ← τ·m^(−s), else τ ← τ·m. log τ rises ln m per skipped step and falls s·ln m per
    α step, so in the long run a fraction 1/(1 + s) of the steps are α steps.

    Args:
        threshold: τ₀ (``--init_alpha_threshold`` 1.0).
        threshold_multiplier: m (``--threshold_multiplier`` 1.05 at HEAD; 1.1 in the v1-era code).
        every: s, weight steps per α step in equilibrium (``--schedfreq``; 10 in the README's
            DARTS-PRIME command).
        ewma: β (``--ewma`` 0.2 at HEAD; 1.0, no smoothing, in the v1-era code).
        match_split: use the matching split val_fraction = 1/(1 + s) (``--dyno_split``), which
            the config applies to ``data.val_fraction`` (default false).
    """

    needs_grad_norm = True

    def __init__(self, threshold: float = 1.0, threshold_multiplier: float = 1.05,
                 every: float = 10, ewma: float = 0.2, match_split: bool = False) -> None:
        require(is_number(threshold) and threshold > 0, "threshold", threshold, "a number > 0")
        require(is_number(threshold_multiplier) and threshold_multiplier > 1,
                "threshold_multiplier", threshold_multiplier, "a number > 1")
        require(is_number(every) and every > 0, "every", every, "a number > 0")
        require(is_number(ewma) and 0 < ewma <= 1, "ewma", ewma, "a number in (0, 1]")
        require(isinstance(match_split, bool), "match_split", match_split, "true or false")
        self.tau0, self.m, self.s, self.beta = float(threshold), float(threshold_multiplier), \
            float(every), float(ewma)
        self.match_split = match_split
        self.requested_val_fraction = 1.0 / (1.0 + self.s) if match_split else None
        self.tau = self.tau0
        self.fbar: float | None = None

    def wants_step(self, ctx):
        if self.fbar is not None and 0 < self.fbar < self.tau:
            self.tau *= self.m ** (-self.s)
            return True
        self.tau *= self.m
        return False

    def observe(self, ctx, grad_sq_norm):
        f = float(grad_sq_norm)
        self.fbar = f if self.fbar is None else self.beta * f + (1 - self.beta) * self.fbar

    def state_dict(self):
        return {"tau": self.tau, "fbar": self.fbar}

    def load_state_dict(self, state):
        self.tau = float(state["tau"])
        self.fbar = None if state.get("fbar") is None else float(state["fbar"])
