"""RELAX's learned part of the control variate (Grathwohl et al., ICLR 2018), for
``gumbel_hard: {estimator: relax}`` (:mod:`raydnas.axes.estimators`).

r_ρ is a one-hidden-layer tanh MLP on the relaxed op weights of every cell type, concatenated
(``[rows, ops]`` each, flattened), to one number. Its output layer starts at zero, so the
first α steps are REBAR's; ρ is stepped by Adam on ∇_ρ ĝ² after every α step
(:meth:`RelaxControl.step`). Built on the first α step, on α's device and dtype, from a fixed
seed; its weights and Adam's state are part of the activation's state (the checkpoint).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .estimators import variance_loss


class RelaxControl:
    """r_ρ, its optimizer and the ρ-dependent part of the last α step's gradient estimate.

    Args:
        hidden: the hidden layer's width.
        lr: Adam's learning rate for ρ.
    """

    SEED = 20_18

    def __init__(self, hidden: int = 32, lr: float = 1e-3) -> None:
        self.hidden, self.lr = int(hidden), float(lr)
        self.net: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending: dict[str, Any] | None = None  # a loaded state, applied when built
        self._g_r: dict[str, torch.Tensor] | None = None  # ĝ's r part per cell type, a graph

    def build(self, weights: dict[str, torch.Tensor]) -> None:
        """Create r_ρ for relaxed ``weights`` of these shapes (once)."""
        if self.net is not None:
            return
        ref = next(iter(weights.values()))
        d = sum(w.numel() for w in weights.values())
        with torch.random.fork_rng(devices=[]):  # the CPU stream alone: no GPU reseeded
            torch.default_generator.manual_seed(self.SEED)
            net = nn.Sequential(nn.Linear(d, self.hidden), nn.Tanh(), nn.Linear(self.hidden, 1))
        nn.init.zeros_(net[2].weight)
        nn.init.zeros_(net[2].bias)
        self.net = net.to(ref.device, ref.dtype)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        if self._pending is not None:
            self.net.load_state_dict(self._pending["net"])
            self.optimizer.load_state_dict(self._pending["optimizer"])
            self._pending = None

    def __call__(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """r_ρ of relaxed weights (cell type → ``[rows, ops]``), a scalar."""
        self.build(weights)
        x = torch.cat([weights[ct].reshape(-1) for ct in sorted(weights)])
        return self.net(x).squeeze(-1)

    def keep(self, alphas: dict[str, torch.Tensor], r_surrogate: torch.Tensor
             ) -> dict[str, torch.Tensor]:
        """∇_α of the r part of the surrogate, kept with its graph in ρ for :meth:`step`."""
        names = list(alphas)
        grads = torch.autograd.grad(r_surrogate, [alphas[n] for n in names], create_graph=True,
                                    allow_unused=True)
        self._g_r = {n: g for n, g in zip(names, grads) if g is not None}
        return self._g_r

    def step(self, alphas: dict[str, torch.Tensor]) -> float | None:
        """One Adam step of ρ on Σ ĝ², ĝ the α gradient just used (``alpha.grad``); returns
        Σ ĝ² (None when the last α step kept no estimate)."""
        if self._g_r is None or self.optimizer is None:
            return None
        g_r, self._g_r = self._g_r, None
        parts = [variance_loss(alphas[n].grad, g) for n, g in g_r.items()
                 if alphas[n].grad is not None]
        if not parts:
            return None
        loss = sum(parts)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=list(self.net.parameters()))
        self.optimizer.step()
        return float(loss.detach())

    def __getstate__(self) -> dict[str, Any]:
        """Copies (a measured supernet's deep copy) leave the last step's graph behind."""
        return {**self.__dict__, "_g_r": None}

    def state_dict(self) -> dict[str, Any]:
        if self.net is None:
            return self._pending or {}
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if not state:
            return
        if self.net is None:
            self._pending = state
        else:
            self.net.load_state_dict(state["net"])
            self.optimizer.load_state_dict(state["optimizer"])
