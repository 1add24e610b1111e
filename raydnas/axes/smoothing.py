"""SDARTS's smoothing of the weight step (Chen & Hsieh, ICML 2020), on the regularizer axis.

SDARTS regularizes the search implicitly: the weights are trained under a perturbed a(α), which
flattens the validation loss landscape in α. The α step is DARTS's (on the unperturbed α, with
no penalty); only the weight step changes. Checked against xiangning-chen/SmoothDARTS at
d3dbfed0: ``sota/cnn/train_search.py`` ``train`` (α step first; then
``softmax_arch_parameters``, ``perturb_alpha``, the weight step on the perturbed values,
``restore_arch_parameters``), ``attacker/perturb.py`` (``Random_alpha``, ``Linf_PGD_alpha``) and
``sota/cnn/model_search.py`` ``clip``.

Shared by both variants:

* the perturbation is added to a(α) = softmax(α) (the activation's ``probs``), not to the raw α;
* ``clip``: per edge, clamp to [0, 1]; an edge whose entries all clamp to 0 gets 1 at the op
  that was largest before clamping; then divide by the edge's sum;
* ε ramps linearly per epoch, ε_e = 0.03 + (ε_max − 0.03)·e/E (e = epochs completed, E = the
  search's epochs; the code's schedule, which ends at 0.03 + 0.27·(E − 1)/E, never at ε_max).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import SearchContext
from .checks import is_number, require
from .regularizer import REGULARIZERS, Regularizer

#: ε of the first epoch (the code's constant)
EPS_START = 0.03


def clip(w: torch.Tensor) -> torch.Tensor:
    """SmoothDARTS ``clip`` of ``[edges, ops]`` weights: clamp to [0, 1], an all-zero edge gets
    1 at its argmax before clamping, then each edge is divided by its sum."""
    c = w.clamp(0.0, 1.0)
    dead = c.sum(dim=-1, keepdim=True) == 0
    if bool(dead.any()):
        onehot = torch.zeros_like(c).scatter_(-1, w.argmax(dim=-1, keepdim=True), 1.0)
        c = torch.where(dead, onehot, c)
    return c / c.sum(dim=-1, keepdim=True)


class _Smoothing(Regularizer):
    """Shared: the ε ramp and the weight-step hook. No penalty on the α loss."""

    requires_normalized = True  # the perturbation lives on the simplex of each edge
    replaces_weight_step_weights = True

    def __init__(self, epsilon: float) -> None:
        require(is_number(epsilon) and epsilon >= 0, "epsilon", epsilon, "a number >= 0")
        self.epsilon_max = float(epsilon)

    def epsilon(self, epoch: int, epochs: int) -> float:
        """ε of an epoch after ``epoch`` completed ones."""
        return EPS_START + (self.epsilon_max - EPS_START) * epoch / epochs

    def weight_step_weights(self, ctx, weights, batch):
        base = weights if weights is not None else ctx.model.op_probs()
        base = {c: w.detach() for c, w in base.items()}
        return self.perturb(ctx, base, batch, self.epsilon(ctx.epoch, ctx.epochs))

    def perturb(self, ctx: SearchContext, probs: dict[str, torch.Tensor], batch,
                eps: float) -> dict[str, torch.Tensor]:
        raise NotImplementedError


@REGULARIZERS.register("sdarts_rs")
class RandomSmoothing(_Smoothing):
    """SDARTS-RS: the weights train under clip(a(α) + U), U ~ Uniform[−ε, ε] i.i.d. per
    (edge, op), one draw per weight step (SmoothDARTS ``Random_alpha``).

    Args:
        epsilon: ε_max of the ramp (``--epsilon_alpha`` 0.3).
    """

    def __init__(self, epsilon: float = 0.3) -> None:
        super().__init__(epsilon)

    def perturb(self, ctx, probs, batch, eps):
        return {c: clip(p + torch.empty_like(p).uniform_(-eps, eps))
                for c, p in probs.items()}


@REGULARIZERS.register("sdarts_adv")
class AdversarialSmoothing(_Smoothing):
    """SDARTS-ADV: the weights train under the a(α) + δ that maximizes the training loss in an
    L∞ ball, found by PGD on the weight step's own batch (SmoothDARTS ``Linf_PGD_alpha``).

    With the network in eval mode (BatchNorm on running statistics, none updated): δ starts
    Uniform[−ε, ε] then ``clip``; ``steps`` times: a ← a + (2ε/steps)·sign(∇_a L_train(a)),
    a ← clip(a₀ + clamp(a − a₀, −ε, ε)). If the final loss is below the unperturbed one, a₀
    is used instead. Each step costs a forward and a backward of the supernet.

    Args:
        epsilon: ε_max of the ramp (``--epsilon_alpha`` 0.3).
        steps: PGD steps (7).
    """

    def __init__(self, epsilon: float = 0.3, steps: int = 7) -> None:
        super().__init__(epsilon)
        require(isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1,
                "steps", steps, "an integer >= 1")
        self.steps = steps

    def perturb(self, ctx, probs, batch, eps):
        model = ctx.model
        x, y = batch
        was_training = model.training
        model.eval()
        try:
            def loss_at(w):
                # every op runs: an entry clipped to 0 still gets its gradient and can rise
                return F.cross_entropy(model(x, op_weights=w, run_zero_weights=True), y)

            with torch.no_grad():
                before = float(loss_at(probs))
            a = {c: clip(p + torch.empty_like(p).uniform_(-eps, eps))
                 for c, p in probs.items()}
            lr = 2 * eps / self.steps
            for _ in range(self.steps):
                leaves = {c: v.clone().requires_grad_(True) for c, v in a.items()}
                grads = torch.autograd.grad(loss_at(leaves), list(leaves.values()),
                                            allow_unused=True)
                with torch.no_grad():
                    for (c, v), g in zip(leaves.items(), grads):
                        step = v + lr * torch.sign(g) if g is not None else v
                        a[c] = clip(probs[c] + (step - probs[c]).clamp(-eps, eps))
            with torch.no_grad():
                after = float(loss_at(a))
        finally:
            model.train(was_training)
        return probs if before > after else {c: v.detach() for c, v in a.items()}
