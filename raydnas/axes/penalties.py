"""More choices of the regularizer axis (:mod:`.regularizer` holds the contract, ``none``, ``prox``
and ``admm``): SNAS's resource constraint, β-DARTS's beta decay, FairDARTS's zero-one loss and
DrNAS's Dirichlet KL anchor. Each is a term added to the α loss only.
"""

from __future__ import annotations

import torch

from .base import SearchContext
from .checks import is_number, require
from .regularizer import REGULARIZERS, Regularizer


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
        target: a hinge instead (UNAS's latency loss, Vahdat et al., CVPR 2020):
            R = λ·relu(E − target), E = Σ over every cell of Σ_{e,k} a(α)·cost, the supernet's
            expected cost, in the cost's unit (ms for ``latency``); null: the forms above
            (``form``, ``log_penalty`` and ``ratio`` are not used with a target).

    ``cost: latency`` is each op's time measured on the search's device at its start
    (:mod:`raydnas.model.latency`, cached per device and op shape, kept in the checkpoint).

    With a data axis (``data_search``) the input is part of the cost: each configuration k has
    its own table cost_k (the cells run on its input alone, at its side), and every form above
    prices cost(γ) = Σ_k a(γ)_k·cost_k, so E = Σ_k a(γ)_k Σ a(α)·cost_k, the expected cost of
    the (input, cell) pair drawn from a(γ) and a(α), and γ gets its gradient toward cheaper
    inputs (FLOPs and latency grow with the side; parameters do not).
    """

    FORMS = ("snas", "cell")
    COSTS = ("params", "flops", "latency")
    requires_normalized = True

    def __init__(self, lam: float = 1.5e-3, cost: str = "params", log_penalty: bool = True,
                 form: str = "snas", ratio: float = 1.0, target: float | None = None):
        require(is_number(lam) and lam >= 0, "lam", lam, "a number >= 0")
        require(cost in self.COSTS, "cost", cost, ", ".join(self.COSTS))
        require(target is None or (is_number(target) and target > 0), "target", target,
                "null or a number > 0 (the cost's unit: ms for latency)")
        self.target = None if target is None else float(target)
        #: the snas form prices the op weights of the forward pass (a sample), not a(α)
        self.reads_sampled_weights = form == "snas" and target is None
        require(isinstance(log_penalty, bool), "log_penalty", log_penalty, "true or false")
        require(form in self.FORMS, "form", form, " or ".join(self.FORMS))
        require(is_number(ratio) and ratio >= 0, "ratio", ratio, "a number >= 0")
        self.lam, self.cost, self.log = float(lam), cost, log_penalty
        self.form, self.ratio = form, float(ratio)
        self.costs: dict[str, torch.Tensor] = {}

    def setup(self, ctx: SearchContext) -> None:
        if self.cost != "latency":  # measured lazily: a resumed search loads its table instead
            self.costs = ctx.model.op_costs(self.cost, ctx.example_input)

    def measure(self, ctx: SearchContext) -> None:
        """The cost table, now (a measured latency table on first use)."""
        self.costs = ctx.model.op_costs(self.cost, ctx.example_input)

    def penalty(self, ctx):
        if not self.costs:
            self.measure(ctx)
        costs = self.tables(ctx.model.data_probs())
        if self.target is not None:
            return self.lam * torch.relu(self.expected(ctx.model.op_probs(), costs)
                                         - self.target)
        if self.form == "cell":
            return self.lam * self._cell(ctx.model.op_probs(), costs)
        w = ctx.model.last_op_weights or ctx.model.op_probs()
        return self.lam * self._snas(w, costs)

    def tables(self, data_probs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per cell type the ``[cells, edges, ops]`` costs: the table, or with a data axis
        Σ_k a(γ)_k·cost_k over the configurations' tables (differentiable in γ)."""
        if data_probs is None:
            return self.costs
        g = data_probs.reshape(-1, 1, 1, 1)
        return {c: (g * t.to(g)).sum(0) for c, t in self.costs.items()}

    def expected(self, probs: dict[str, torch.Tensor],
                 costs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The supernet's expected cost under a(α): Σ over cells, edges, ops of a·cost."""
        costs = self.costs if costs is None else costs
        return sum((p * costs[c].sum(0).to(p)).sum() for c, p in probs.items())

    def state_dict(self):
        """A measured (latency) table is kept, so a resumed search uses the same costs."""
        if self.cost != "latency" or not self.costs:
            return {}
        return {"costs": {c: t.tolist() for c, t in self.costs.items()}}

    def load_state_dict(self, state):
        if state.get("costs"):
            self.costs = {c: torch.tensor(t) for c, t in state["costs"].items()}

    def _cell(self, probs: dict[str, torch.Tensor], costs: dict[str, torch.Tensor]
              ) -> torch.Tensor:
        r = 0.0
        for c, p in probs.items():
            cost = costs[c].sum(0).to(p)
            e = (p * cost).sum()
            top = cost.detach().max(dim=1).values.sum().clamp_min(1e-12)
            r = r + (torch.log(e + 1e-6 * top) if self.log else e / top)
        return r

    def _snas(self, weights: dict[str, torch.Tensor], costs: dict[str, torch.Tensor]
              ) -> torch.Tensor:
        r = 0.0
        for c, z in weights.items():
            cost = costs[c].to(z)  # [cells, edges, ops]
            per_edge = (z.unsqueeze(0) * cost).sum(-1)  # [cells, edges]
            if self.log:
                per_edge = torch.where(per_edge.detach() < 1, torch.ones_like(per_edge),
                                       per_edge).log()
            else:
                per_edge = per_edge / cost.detach().max(dim=-1).values.clamp_min(1e-12)
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
        require(is_number(lam) and lam >= 0, "lam", lam, "a number >= 0")
        require(is_number(ramp_epochs) and ramp_epochs > 0, "ramp_epochs", ramp_epochs,
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
        require(is_number(weight) and weight >= 0, "weight", weight, "a number >= 0")
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
        require(is_number(scale) and scale >= 0, "scale", scale, "a number >= 0")
        require(is_number(prior) and prior > 0, "prior", prior, "a number > 0")
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
