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
from .checks import require

REGULARIZERS: Registry["Regularizer"] = Registry("regularizer", default="none")


class Regularizer(AxisChoice):
    """Base class: :meth:`penalty` is the term added to the α loss."""

    #: the penalty assumes each edge's a(α) is a distribution over its ops (config validation
    #: rejects activations whose ``normalized`` is False)
    requires_normalized: bool = False
    #: the penalty reads the activation's Dirichlet concentration (config validation rejects
    #: activations whose ``concentration`` is not defined)
    requires_concentration: bool = False

    def penalty(self, ctx: SearchContext) -> torch.Tensor | float:
        """The term added to the α loss, differentiable in α; called after the α loss's forward
        (``ctx.model.last_op_weights`` are that forward's op weights)."""
        return 0.0


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
        require(_num(rho) and rho >= 0, "rho", rho, "a number >= 0")
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
        require(_num(rho) and rho > 0, "rho", rho, "a number > 0")
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
        require(_num(dual_decay) and 0 <= dual_decay <= 1, "dual_decay", dual_decay,
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


@REGULARIZERS.register("resource")
class Resource(Regularizer):
    """SNAS resource constraint (Xie et al., ICLR 2019, §2.4; SNAS-Series ``--resource_efficient
    --method reparametrization --log_penalty``).

    ``form: snas`` (default; SNAS-Series ``model_search.py`` and ``train_search.py``): per cell
    and edge the cost of the architecture sampled in the forward pass, C_{l,e} = Σ_k Z_{e,k}·
    cost_{l,e,k} (Z: the op weights of that forward, a Gumbel sample for SNAS, a(α) for
    deterministic activations), its log (costs below 1 count as 1, i.e. log 0, as SNAS cleans
    them), summed over edges; then averaged over the cells of each type and combined as
    normal + ratio·reduce (SNAS: normal/6 + ratio·reduce/2 for its 6 normal and 2 reduction
    cells). R = λ·that.

    ``form: cell`` (raydnas 0.1): R = λ·Σ_c log(C_c), C_c = Σ_{e,k} a(α)_{c,e,k}·cost_{c,e,k}
    summed over the cells of type c: the log of the whole cell type's expected cost under
    a(α).

    Costs are per (cell, edge, op) of the supernet: ``params`` (weights of the op) or ``flops``
    (multiply-adds of its convs and poolings on one input of the dataset's shape). Either form
    needs an activation whose a(α) is a distribution.

    Args:
        lam: λ (SNAS README ``--resource_lambda 1.5e-3`` with ``--log_penalty``).
        cost: ``params`` or ``flops`` (SNAS offers size, FLOPs and MAC costs).
        log_penalty: the log of the cost (SNAS ``--log_penalty``, default true); false: the
            cost relative to the most expensive choice (``cell``: of the cell type; ``snas``:
            of each edge).
        form: ``snas`` or ``cell`` (above).
        ratio: weight of the reduction cells (SNAS ``--ratio`` 1).
    """

    FORMS = ("snas", "cell")
    requires_normalized = True

    def __init__(self, lam: float = 1.5e-3, cost: str = "params", log_penalty: bool = True,
                 form: str = "snas", ratio: float = 1.0):
        require(_num(lam) and lam >= 0, "lam", lam, "a number >= 0")
        require(cost in ("params", "flops"), "cost", cost, "params or flops")
        require(isinstance(log_penalty, bool), "log_penalty", log_penalty, "true or false")
        require(form in self.FORMS, "form", form, " or ".join(self.FORMS))
        require(_num(ratio) and ratio >= 0, "ratio", ratio, "a number >= 0")
        self.lam, self.cost, self.log = float(lam), cost, log_penalty
        self.form, self.ratio = form, float(ratio)
        self.costs: dict[str, torch.Tensor] = {}

    def setup(self, ctx: SearchContext) -> None:
        self.costs = ctx.model.op_costs(self.cost, ctx.example_input)

    def penalty(self, ctx):
        if not self.costs:
            self.setup(ctx)
        if self.form == "cell":
            return self.lam * self._cell(ctx.model.op_probs())
        w = ctx.model.last_op_weights or ctx.model.op_probs()
        return self.lam * self._snas(w)

    def _cell(self, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        r = 0.0
        for c, p in probs.items():
            cost = self.costs[c].sum(0).to(p)
            e = (p * cost).sum()
            top = cost.max(dim=1).values.sum().clamp_min(1e-12)
            r = r + (torch.log(e + 1e-6 * top) if self.log else e / top)
        return r

    def _snas(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        r = 0.0
        for c, z in weights.items():
            cost = self.costs[c].to(z)  # [cells, edges, ops]
            per_edge = (z.unsqueeze(0) * cost).sum(-1)  # [cells, edges]
            if self.log:
                per_edge = torch.where(per_edge.detach() < 1, torch.ones_like(per_edge),
                                       per_edge).log()
            else:
                per_edge = per_edge / cost.max(dim=-1).values.clamp_min(1e-12)
            r = r + (self.ratio if c == "reduce" else 1.0) * per_edge.sum(-1).mean()
        return r


@REGULARIZERS.register("beta")
class BetaDecay(Regularizer):
    """β-DARTS beta-decay regularization (Ye et al., CVPR 2022; code Sunshine-Ye/Beta-DARTS at
    f3077048, ``optimizers/darts/architect.py``: ``mlc_loss`` and ``_backward_step``).

    R = λ_e · mean over every edge of log Σ_k exp(α_{e,k}), on the raw α (before the activation;
    the edges of all cell types pooled, as the code's single NAS-Bench-201 α tensor), with the
    linear weight λ_e = ``lam`` · e / ``ramp_epochs``, e the epochs completed. The code writes
    ``weights = 0 + 50*epoch/100``: λ grows by 0.5 per epoch whatever ``--epochs`` is (its
    NAS-Bench-201 search runs ``--epochs 100``), hence ``lam`` 50 and ``ramp_epochs`` 100.
    ∂R/∂α_e = λ_e·softmax(α_e)/E: every α is pushed down in proportion to its softmax weight,
    which keeps the logits' scale small (the "beta decay").

    The code adds R only in its first-order α step (``--unrolled`` skips it), and its DARTS-space
    script calls ``architect.step`` without the ``epoch`` this architect requires; here R is the
    regularizer of any gradient estimator and any space.

    Args:
        lam: the weight after ``ramp_epochs`` epochs (50).
        ramp_epochs: epochs over which λ grows from 0 to ``lam`` (100), and on beyond.
    """

    requires_normalized = True  # defined on the logits of a softmax-like activation

    def __init__(self, lam: float = 50.0, ramp_epochs: float = 100.0) -> None:
        require(_num(lam) and lam >= 0, "lam", lam, "a number >= 0")
        require(_num(ramp_epochs) and ramp_epochs > 0, "ramp_epochs", ramp_epochs,
                "a number > 0")
        self.lam, self.ramp_epochs = float(lam), float(ramp_epochs)

    def weight(self, epoch: int) -> float:
        """λ_e after ``epoch`` completed epochs."""
        return self.lam * epoch / self.ramp_epochs

    def penalty(self, ctx):
        w = self.weight(ctx.epoch)
        if w == 0:
            return 0.0
        alphas = [a.reshape(-1, a.shape[-1]) for a in ctx.model.alphas.values()]
        return w * torch.logsumexp(torch.cat(alphas), dim=-1).mean()


@REGULARIZERS.register("zero_one")
class ZeroOne(Regularizer):
    """FairDARTS's zero-one loss (Chu et al., ECCV 2020; code xiaomi-automl/FairDARTS at
    270cfc94, ``fairdarts/separate_loss.py`` ``ConvSeparateLoss`` and ``architect.py``).

    R = −w₀ · mean over every (cell type, edge, op) of (a(α) − ½)², one mean over the entries
    of all cell types together (the code concatenates σ(α_normal) and σ(α_reduce)), constant in
    time; with the ``sigmoid`` activation a(α) = σ(α). It pushes each op's weight away from ½,
    toward 0 or 1. The code also adds it to the weight step's loss, where it is a constant of
    the weights; here it is on the α loss only, which is where it acts.

    Args:
        weight: w₀ (``--aux_loss_weight`` 10).
        norm: ``l2`` (the squared distance, ``--sep_loss l2``, default) or ``l1`` (|a(α) − ½|,
            the code's ``TriSeparateLoss``).
    """

    def __init__(self, weight: float = 10.0, norm: str = "l2") -> None:
        require(_num(weight) and weight >= 0, "weight", weight, "a number >= 0")
        require(norm in ("l2", "l1"), "norm", norm, "l2 or l1")
        self.weight, self.norm = float(weight), norm

    def penalty(self, ctx):
        if self.weight == 0:
            return 0.0
        d = torch.cat([p.reshape(-1) for p in ctx.model.op_probs().values()]) - 0.5
        return -self.weight * (d.pow(2) if self.norm == "l2" else d.abs()).mean()


@REGULARIZERS.register("dirichlet_kl")
class DirichletKL(Regularizer):
    """DrNAS's KL anchor (Chen et al., ICLR 2021; code xiangning-chen/DrNAS at f2caa4db,
    ``201-space/search_model.py`` ``_get_kl_reg``; ``--reg_type kl``).

    R = s · Σ over every cell type and edge of KL(Dir(β_e) ‖ Dir(prior·1)), β_e the
    activation's concentration (``dirichlet``: elu(α_e) + 1), summed, not averaged, over
    edges, on the α loss only. The code's default is ``--reg_type l2``: Adam's weight decay of
    ``reg_scale`` 1e-3 on α, which is ``optim.a_weight_decay`` here (the ``drnas`` preset);
    its ``--arch_weight_decay`` is parsed but unused, so with ``kl`` set
    ``optim.a_weight_decay: 0`` to match the code.

    Args:
        scale: s (``--reg_scale`` 1e-3; the code's help says to adjust it for ``kl``).
        prior: the prior's concentration (the code's anchor: 1, the uniform Dirichlet).
    """

    requires_concentration = True

    def __init__(self, scale: float = 1e-3, prior: float = 1.0) -> None:
        require(_num(scale) and scale >= 0, "scale", scale, "a number >= 0")
        require(_num(prior) and prior > 0, "prior", prior, "a number > 0")
        self.scale, self.prior = float(scale), float(prior)

    def penalty(self, ctx):
        act = ctx.model.activation
        kl = 0.0
        for a in ctx.model.alphas.values():
            conc = act.concentration(a)
            q = torch.distributions.Dirichlet(conc)
            p = torch.distributions.Dirichlet(torch.full_like(conc, self.prior))
            kl = kl + torch.distributions.kl_divergence(q, p).sum()
        return self.scale * kl
