"""Regularizer axis: a term added to the α loss only (never to the weight loss).

``penalty(ctx)`` reads ``ctx.model.op_probs()`` (the deterministic a(α)), ``ctx.progress`` (t/T)
and ``ctx.space``; Π(·) below is the space's discretization (``raydnas.model.genotype.derive``) as a
binary mask, computed on detached values.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..model.genotype import derive
from ..registry import Registry
from .base import AxisChoice, SearchContext
from .checks import is_number, require

REGULARIZERS: Registry["Regularizer"] = Registry("regularizer", default="none")


class Regularizer(AxisChoice):
    """Base class: :meth:`penalty` is the term added to the α loss."""

    #: the penalty assumes each edge's a(α) is a distribution over its ops (config validation
    #: rejects activations whose ``normalized`` is False)
    requires_normalized: bool = False
    #: the penalty reads the activation's Dirichlet concentration (config validation rejects
    #: activations whose ``concentration`` is not defined)
    requires_concentration: bool = False
    #: the penalty pulls on α (False only for ``none``)
    acts_on_alpha: bool = True

    def penalty(self, ctx: SearchContext) -> torch.Tensor | float:
        """The term added to the α loss, differentiable in α; called after the α loss's forward
        (``ctx.model.last_op_weights`` are that forward's op weights)."""
        return 0.0


def project(weights: dict[str, torch.Tensor], space: Any) -> dict[str, torch.Tensor]:
    """Π: the binary mask of the discrete cell the space's rule derives from ``weights``."""
    _, masks = derive({c: w.detach() for c, w in weights.items()}, space)
    return {c: masks[c].to(weights[c].device, weights[c].dtype) for c in weights}


def _norm(x: torch.Tensor, squared: bool) -> torch.Tensor:
    sq = x.pow(2).sum()
    # ‖x‖ has no derivative at 0; use the subgradient 0 there instead of NaN
    return sq if squared else torch.sqrt(sq.clamp_min(1e-30)) * (sq > 0)


@REGULARIZERS.register("none")
class NoRegularizer(Regularizer):
    """No pull toward a discrete cell (plain DARTS)."""

    acts_on_alpha = False


@REGULARIZERS.register("prox")
class Prox(Regularizer):
    """Proximity to the discretized cell (Maile et al. 2021; DARTS-PRIME ``--reg prox``).

    R = Σ_c (t/T)·(ρ/2)·‖a(α_c) − Π(a(α_c))‖_F, a Frobenius norm (not squared, as in the code),
    Π on detached values, t/T the fraction of the search done (a linear ramp 0 → ρ/2).

    Args:
        rho: ρ (``--rho`` 0.1 at HEAD, "admm/prox relative weight"; 1e-3 in the v1-era code).
        ramp: scale by t/T (default true; false: constant ρ/2).
    """

    def __init__(self, rho: float = 0.1, ramp: bool = True) -> None:
        require(is_number(rho) and rho >= 0, "rho", rho, "a number >= 0")
        require(isinstance(ramp, bool), "ramp", ramp, "true or false")
        self.rho, self.ramp = float(rho), ramp

    def penalty(self, ctx):
        scale = (ctx.progress if self.ramp else 1.0) * self.rho / 2
        if scale == 0:
            return 0.0
        probs = ctx.model.op_probs()
        target = project(probs, ctx.space)
        return scale * sum(_norm(probs[c] - target[c], False) for c in probs)


@REGULARIZERS.register("admm")
class ADMM(Regularizer):
    """ADMM toward a discrete cell (Maile et al. 2021 v1; DARTS-PRIME ``--reg admm``).

    Constraint: a(α) ∈ 𝒵, the binary masks of valid discrete cells. Split variable Z and scaled
    dual U per cell type, U₀ = 0. Every α step adds (ρ/2)·‖a(α) − Z + U‖ to the α loss; every k
    α steps: Z ← Π(a(α) + U), U ← γ_U·U + a(α) − Z.

    ``variant: textbook`` (default) is scaled-form ADMM (Boyd et al. 2011, §3.1.1) with
    x = a(α) and inexact x-steps: a squared norm, Z₀ = Π(a(α₀)), γ_U = 1.

    ``variant: darts_prime`` is what k8lion/DARTS-PRIME's code does (``model_admm_hard_statebn.py``
    ``admm_loss``, ``initialize_Z_and_U``, ``update_Z``, ``update_U``, checked at 4953e40): an
    unsquared Frobenius norm of (a(α) − Z + U)⊙M (M the CRB pruning mask), Z₀ = α₀ itself
    (a copy of the raw α, not projected), Z ← Π(a(α + U)), U ← (U + α − Z)⊙M on raw α, so
    γ_U = 1: the code parses ``--zuewma`` (default 0.2) but never passes it to the network,
    whose own default is 1.0. Any flag given explicitly overrides the variant's.

    Args:
        rho: ρ (0.1 at HEAD; 1e-3 in the v1-era code).
        every: k, α steps between Z/U updates (``--admm_freq`` 10).
        variant: ``textbook`` or ``darts_prime`` (above).
        squared_norm: squared penalty (textbook true, darts_prime false).
        dual_decay: γ_U (textbook and darts_prime 1.0; an experiment, not a published setting).
        project_on_activated: project a(α) + U and update U with a(α) (textbook true;
            darts_prime false: Π(a(α + U)), raw α in U).
        z_init: ``projected`` (Z₀ = Π(a(α₀)), textbook) or ``alpha`` (Z₀ = α₀, darts_prime).
    """

    VARIANTS = {
        "textbook": {"squared_norm": True, "dual_decay": 1.0, "project_on_activated": True,
                     "z_init": "projected"},
        "darts_prime": {"squared_norm": False, "dual_decay": 1.0, "project_on_activated": False,
                        "z_init": "alpha"},
    }

    def __init__(self, rho: float = 0.1, every: int = 10, variant: str = "textbook",
                 squared_norm: bool | None = None, dual_decay: float | None = None,
                 project_on_activated: bool | None = None, z_init: str | None = None) -> None:
        require(is_number(rho) and rho > 0, "rho", rho, "a number > 0")
        require(isinstance(every, int) and not isinstance(every, bool) and every >= 1, "every",
                every, "an integer >= 1")
        require(variant in self.VARIANTS, "variant", variant, " or ".join(self.VARIANTS))
        v = self.VARIANTS[variant]
        squared_norm = v["squared_norm"] if squared_norm is None else squared_norm
        dual_decay = v["dual_decay"] if dual_decay is None else dual_decay
        project_on_activated = (v["project_on_activated"] if project_on_activated is None
                                else project_on_activated)
        z_init = v["z_init"] if z_init is None else z_init
        require(isinstance(squared_norm, bool), "squared_norm", squared_norm, "true or false")
        require(is_number(dual_decay) and 0 <= dual_decay <= 1, "dual_decay", dual_decay,
                "a number in [0, 1]")
        require(isinstance(project_on_activated, bool), "project_on_activated",
                project_on_activated, "true or false")
        require(z_init in ("projected", "alpha"), "z_init", z_init, "projected or alpha")
        self.rho, self.every, self.squared = float(rho), every, squared_norm
        self.gamma, self.on_activated, self.z_init = float(dual_decay), project_on_activated, z_init
        self.variant = variant
        self.Z: dict[str, torch.Tensor] = {}
        self.U: dict[str, torch.Tensor] = {}
        self.n = 0

    def setup(self, ctx: SearchContext) -> None:
        self._ensure(ctx)

    def _ensure(self, ctx):
        if not self.Z:
            with torch.no_grad():
                probs = ctx.model.op_probs()
                self.Z = (project(probs, ctx.space) if self.z_init == "projected"
                          else {c: a.detach().clone() for c, a in ctx.model.alphas.items()})
                self.U = {c: torch.zeros_like(p) for c, p in probs.items()}

    @staticmethod
    def _mask(ctx, c: str, like: torch.Tensor) -> torch.Tensor | float:
        """The activation's pruning mask M of cell type c (CRB), else 1."""
        m = ctx.model.activation.alive_mask(c)
        return 1.0 if m is None else m.to(like)

    def penalty(self, ctx):
        self._ensure(ctx)
        probs = ctx.model.op_probs()
        r = 0.0
        for c, p in probs.items():
            z, u = self.Z[c].to(p), self.U[c].to(p)
            r = r + _norm((p - z + u) * self._mask(ctx, c, p), self.squared)
        return self.rho / 2 * r

    def after_arch_step(self, ctx):
        self.n += 1
        if self.n % self.every == 0:
            self.update(ctx)

    @torch.no_grad()
    def update(self, ctx: SearchContext) -> None:
        """Z ← Π(a(α) + U), U ← γ_U·U + a(α) − Z (or the code variant)."""
        self._ensure(ctx)
        alphas = dict(ctx.model.alphas.items())
        probs = ctx.model.op_probs()
        act = ctx.model.activation
        if self.on_activated:
            x = probs
            self.Z = project({c: probs[c] + self.U[c].to(probs[c]) for c in probs}, ctx.space)
        else:
            x = {c: a.detach() for c, a in alphas.items()}
            self.Z = project({c: act.probs(x[c] + self.U[c].to(x[c])) for c in x}, ctx.space)
        self.U = {c: (self.gamma * self.U[c].to(x[c]) + x[c] - self.Z[c].to(x[c]))
                  * self._mask(ctx, c, x[c]) for c in x}

    def epoch_metrics(self, ctx, genotype, metrics):
        probs = {c: p.detach() for c, p in ctx.model.op_probs().items()}
        pi = project(probs, ctx.space)
        sq = sum(float((probs[c] - self.Z[c].to(probs[c])).pow(2).sum()) for c in probs)
        edges = sum(p.shape[0] for p in probs.values())
        return {"admm_residual": math.sqrt(sq / edges),
                "admm_feasible": all(torch.equal(pi[c], self.Z[c].to(pi[c])) for c in probs)}

    def state_dict(self):
        return {"Z": {c: z.detach().cpu().clone() for c, z in self.Z.items()},
                "U": {c: u.detach().cpu().clone() for c, u in self.U.items()}, "n": self.n}

    def load_state_dict(self, state):
        self.Z = {c: z.clone() for c, z in state.get("Z", {}).items()}
        self.U = {c: u.clone() for c, u in state.get("U", {}).items()}
        self.n = int(state.get("n", 0))
