"""Regularizer axis: a term added to the α loss only (never to the weight loss).

``penalty(st)`` reads ``st.model.op_probs()`` (the deterministic a(α)), ``st.progress`` (t/T)
and ``st.space``; Π(·) below is the space's discretization (``raydnas.genotype.derive``) as a
binary mask, computed on detached values.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..genotype import derive
from ..registry import Registry
from .checks import require

REGULARIZERS: Registry["Regularizer"] = Registry("regularizer")


class Regularizer:
    def penalty(self, st: Any) -> torch.Tensor | float:
        return 0.0

    def after_arch_step(self, st: Any) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


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

    def penalty(self, st):
        scale = (st.progress if self.ramp else 1.0) * self.rho / 2
        if scale == 0:
            return 0.0
        probs = st.model.op_probs()
        target = project(probs, st.space)
        return scale * sum(_norm(probs[c] - target[c], False) for c in probs)


@REGULARIZERS.register("admm")
class ADMM(Regularizer):
    """ADMM toward a discrete cell (Maile et al. 2021 v1; DARTS-PRIME ``--reg admm``).

    Constraint: a(α) ∈ 𝒵, the binary masks of valid discrete cells. Split variable Z and scaled
    dual U per cell type, Z₀ = Π(a(α₀)), U₀ = 0. Every α step adds (ρ/2)·‖a(α) − Z + U‖² to the α
    loss; every k α steps: Z ← Π(a(α) + U), U ← γ_U·U + a(α) − Z. This is textbook scaled-form
    ADMM (Boyd et al. 2011, §3.1.1) with x = a(α) and inexact x-steps, the default. The public
    code differs; its variant is reachable with ``squared_norm: false`` (an unsquared Frobenius
    norm), ``dual_decay: 0.2`` (a decayed dual, HEAD ``--zuewma``) and
    ``project_on_activated: false`` (Z ← Π(a(α + U)), U ← γ_U·U + α − Z on raw α).

    Args:
        rho: ρ (0.1 at HEAD; 1e-3 in the v1-era code).
        every: k, α steps between Z/U updates (``--admm_freq`` 10).
        squared_norm: squared penalty (textbook; default true).
        dual_decay: γ_U (textbook 1.0; HEAD code 0.2).
        project_on_activated: project a(α) + U and update U with a(α) (textbook; default true).
    """

    def __init__(self, rho: float = 0.1, every: int = 10, squared_norm: bool = True,
                 dual_decay: float = 1.0, project_on_activated: bool = True) -> None:
        require(_num(rho) and rho > 0, "rho", rho, "a number > 0")
        require(isinstance(every, int) and not isinstance(every, bool) and every >= 1, "every",
                every, "an integer >= 1")
        require(isinstance(squared_norm, bool), "squared_norm", squared_norm, "true or false")
        require(_num(dual_decay) and 0 <= dual_decay <= 1, "dual_decay", dual_decay,
                "a number in [0, 1]")
        require(isinstance(project_on_activated, bool), "project_on_activated",
                project_on_activated, "true or false")
        self.rho, self.every, self.squared = float(rho), every, squared_norm
        self.gamma, self.on_activated = float(dual_decay), project_on_activated
        self.Z: dict[str, torch.Tensor] = {}
        self.U: dict[str, torch.Tensor] = {}
        self.n = 0

    def setup(self, st: Any) -> None:
        self._ensure(st)

    def _ensure(self, st):
        if not self.Z:
            with torch.no_grad():
                probs = st.model.op_probs()
                self.Z = project(probs, st.space)
                self.U = {c: torch.zeros_like(p) for c, p in probs.items()}

    def penalty(self, st):
        self._ensure(st)
        probs = st.model.op_probs()
        r = 0.0
        for c, p in probs.items():
            z, u = self.Z[c].to(p), self.U[c].to(p)
            r = r + _norm(p - z + u, self.squared)
        return self.rho / 2 * r

    def after_arch_step(self, st):
        self.n += 1
        if self.n % self.every == 0:
            self.update(st)

    @torch.no_grad()
    def update(self, st: Any) -> None:
        """Z ← Π(a(α) + U), U ← γ_U·U + a(α) − Z (or the code variant)."""
        self._ensure(st)
        alphas = dict(st.model.alphas.items())
        probs = st.model.op_probs()
        act = st.model.activation
        if self.on_activated:
            x = probs
            self.Z = project({c: probs[c] + self.U[c].to(probs[c]) for c in probs}, st.space)
        else:
            x = {c: a.detach() for c, a in alphas.items()}
            self.Z = project({c: act.probs(x[c] + self.U[c].to(x[c])) for c in x}, st.space)
        self.U = {c: self.gamma * self.U[c].to(x[c]) + x[c] - self.Z[c] for c in x}

    def epoch_metrics(self, st, genotype, metrics):
        probs = {c: p.detach() for c, p in st.model.op_probs().items()}
        pi = project(probs, st.space)
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
    """SNAS resource constraint (Xie et al., ICLR 2019, §2.4; SNAS-Series ``--resource_efficient``).

    R = λ·Σ_c log(C_c), C_c = Σ_{e,k} a(α)_{c,e,k}·cost_{c,e,k}: the expected cost of cell type c
    under each edge's categorical distribution a(α) (needs an activation whose a(α) is a
    distribution), summed over the cells of that type. Costs are per (edge, op) of the supernet:
    ``params`` (weights of the op) or ``flops`` (multiply-adds of its convs and poolings on one
    input of the dataset's shape). SNAS weights normal and reduction cells as normal/6 +
    ratio·reduce/2; here the cell types count equally (the log makes the scale immaterial).

    Args:
        lam: λ (SNAS README ``--resource_lambda 1.5e-3`` with ``--log_penalty``).
        cost: ``params`` or ``flops`` (SNAS offers size, FLOPs and MAC costs).
        log_penalty: λ·log C (SNAS ``--log_penalty``, default true); false: λ·C/C_max, the cost
            relative to the most expensive cell.
    """

    def __init__(self, lam: float = 1.5e-3, cost: str = "params", log_penalty: bool = True):
        require(_num(lam) and lam >= 0, "lam", lam, "a number >= 0")
        require(cost in ("params", "flops"), "cost", cost, "params or flops")
        require(isinstance(log_penalty, bool), "log_penalty", log_penalty, "true or false")
        self.lam, self.cost, self.log = float(lam), cost, log_penalty
        self.costs: dict[str, torch.Tensor] = {}

    def setup(self, st: Any) -> None:
        x = _example_input(st)
        self.costs = op_costs(st.model, self.cost, x)

    def penalty(self, st):
        if not self.costs:
            self.setup(st)
        probs = st.model.op_probs()
        r = 0.0
        for c, p in probs.items():
            cost = self.costs[c].to(p)
            e = (p * cost).sum()
            top = cost.max(dim=1).values.sum().clamp_min(1e-12)
            r = r + (torch.log(e + 1e-6 * top) if self.log else e / top)
        return self.lam * r


def _example_input(st: Any) -> torch.Tensor:
    d = st.dataset.data
    x = d[0][:1] if isinstance(d, tuple) else d[0][0].unsqueeze(0)
    return x.to(st.device)


@torch.no_grad()
def op_costs(model: Any, kind: str, x: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per cell type an ``[edges, ops]`` tensor of op costs summed over that type's cells."""
    from ..supernet import Cell

    cells = [c for c in model.cells if isinstance(c, Cell)]
    costs = {ct: torch.zeros(a.shape) for ct, a in model.alphas.items()}
    counters: dict[int, list[float]] = {}
    hooks = []
    if kind == "flops":
        def hook(mod, inp, out, acc):
            per = out[0].numel()
            if isinstance(mod, torch.nn.Conv2d):
                acc[0] += per * mod.in_channels // mod.groups * mod.kernel_size[0] \
                    * mod.kernel_size[1]
            elif isinstance(mod, (torch.nn.MaxPool2d, torch.nn.AvgPool2d)):
                k = mod.kernel_size if isinstance(mod.kernel_size, int) else mod.kernel_size[0]
                acc[0] += per * k * k
        for cell in cells:
            for edge in cell.edges:
                for op in edge._ops:
                    acc = [0.0]
                    counters[id(op)] = acc
                    for m in op.modules():
                        hooks.append(m.register_forward_hook(
                            lambda mod, i, o, acc=acc: hook(mod, i, o, acc)))
        was = model.training
        model.eval()
        try:
            model(x, op_weights={ct: torch.ones(a.shape, device=x.device)
                                 for ct, a in model.alphas.items()})
        finally:
            model.train(was)
            for h in hooks:
                h.remove()
    for cell in cells:
        ct = "reduce" if cell.reduction else "normal"
        for e, edge in enumerate(cell.edges):
            for k, op in enumerate(edge._ops):
                if kind == "params":
                    costs[ct][e, k] += sum(p.numel() for p in op.parameters())
                else:
                    costs[ct][e, k] += counters[id(op)][0]
    return costs
