"""DrNAS's Dirichlet activation (Chen et al., ICLR 2021) on the activation axis."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .activation import ACTIVATIONS, Stochastic
from .score import ScoreDraws


class _Pathwise(torch.autograd.Function):
    """x = a given Dirichlet(β) sample, with the implicit-reparametrization gradient ∂x/∂β
    (Figurnov et al. 2018; the backward of torch's ``Dirichlet.rsample``), so a sample can be
    reused by several forwards and each gets the gradient of the same draw."""

    @staticmethod
    def forward(ctx, conc, x):
        ctx.save_for_backward(x, conc)
        return x.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, conc = ctx.saved_tensors
        total = conc.sum(-1, True).expand_as(conc)
        dx = torch._dirichlet_grad(x, conc, total)
        return dx * (grad_out - (x * grad_out).sum(-1, True)), None


def pathwise_sample(conc: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
    """A Dir(``conc``) sample per row (``x`` if given) with pathwise gradients to ``conc``."""
    if x is None:
        with torch.no_grad():
            x = torch.distributions.Dirichlet(conc.detach()).sample()
    return _Pathwise.apply(conc, x)


@ACTIVATIONS.register("dirichlet")
class Dirichlet(ScoreDraws, Stochastic):
    """DrNAS: each edge's op weights are a sample of Dir(β), β = elu(α) + 1, drawn per forward
    pass with pathwise gradients (``torch.distributions.Dirichlet.rsample``, implicit
    reparametrization), one draw per cell type shared by its cells and the whole batch.
    Checked against xiangning-chen/DrNAS at f2caa4db, ``utils.py`` ``process_step_vector``
    (repository root, imported by ``201-space/``) and ``201-space/search_model.py`` (α init
    1e-3·N(0, 1)).

    ``probs`` is the Dirichlet mean β/Σβ, used to discretize, regularize and log; its argmax is
    the argmax of softmax(α) that the code's ``genotype`` takes (elu + 1 is increasing). Eval
    mode uses the mean too; the code's ``infer`` samples, so measurement averages seeded
    samples (:meth:`sample`, ``measure.samples``) as for the Gumbel activations.

    The code's default regularizer is Adam's L2 weight decay of ``--reg_scale`` 1e-3 on α
    (``optim.a_weight_decay``); its KL anchor is the ``dirichlet_kl`` regularizer. Its
    progressive learning (partial channels and op pruning) belongs to the DARTS-space script;
    the README's NAS-Bench-201 default (``201-space/train_search.py``, ``--k 1``) runs without.

    ``estimator`` (UNAS; :mod:`raydnas.axes.score`): ``relaxed`` (default) is the pathwise
    gradient above; ``reinforce``: the weights are the draw w itself, no gradient through it,
    and α's gradient is (L − c)·∇ log Dir(w; β(α)), c the moving average of L
    (``baseline_decay``).

    Args:
        estimator: ``relaxed`` or ``reinforce``.
        baseline_decay: the moving average's decay for ``reinforce`` (0.9).
    """

    has_concentration = True
    ESTIMATORS = ("relaxed", "reinforce")

    def __init__(self, estimator: str = "relaxed", baseline_decay: float = 0.9) -> None:
        self._init_score(estimator, self.ESTIMATORS, baseline_decay)

    def concentration(self, alpha: torch.Tensor) -> torch.Tensor:
        return F.elu(alpha) + 1.0

    def probs(self, alpha: torch.Tensor) -> torch.Tensor:
        c = self.concentration(alpha)
        return c / c.sum(dim=-1, keepdim=True)

    def weights(self, alpha: torch.Tensor, training: bool) -> torch.Tensor:
        if not training:
            self._forget_draws()
            return self.probs(alpha)
        conc = self.concentration(alpha)
        x = self._frozen.get(id(alpha)) if self._frozen is not None else None
        w = pathwise_sample(conc, x)
        if self._frozen is not None:
            self._frozen[id(alpha)] = w.detach()
        if self.score_function:  # the draw itself; α learns through score_term
            self._keep_draw(alpha, w.detach())
            return w.detach()
        return w

    def score_term(self, loss, alphas, objective):
        """REINFORCE: (L − c)·Σ log Dir(w; β(α)) over the α of the forward that gave ``loss``
        (w clamped to the smallest normal number where a draw underflowed to 0)."""
        drawn = self._take_draws(alphas)
        if drawn is None:
            return 0.0
        logq = sum(self.log_density(alphas[ct], w).sum() for ct, w in drawn.items())
        return self._reinforce(float(loss.detach()), logq)

    def log_density(self, alpha: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """log Dir(w; β(α)) per row (``alpha.shape[:-1]``)."""
        return torch.distributions.Dirichlet(self.concentration(alpha), validate_args=False
                                             ).log_prob(w.clamp_min(torch.finfo(w.dtype).tiny))

    def state_dict(self):
        return self._score_state()

    def load_state_dict(self, state):
        self._load_score_state(state)

    @torch.no_grad()
    def sample(self, alpha, generator):
        """A Dirichlet draw with the concentration of ``alpha``, seeded by ``generator``."""
        seed = int(torch.randint(2**62, (1,), generator=generator))
        conc = self.concentration(alpha.detach()).double().cpu()
        with torch.random.fork_rng(devices=[]):  # the CPU stream alone: no GPU reseeded
            torch.default_generator.manual_seed(seed)
            w = torch.distributions.Dirichlet(conc).sample()
        return w.to(alpha.device, alpha.dtype)
