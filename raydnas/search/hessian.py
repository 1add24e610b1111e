"""RobustDARTS's signal (Zela et al., ICLR 2020): the dominant eigenvalue of the validation
loss's Hessian with respect to α, and the DARTS-ES early-stop rule on it.

Checked against automl/RobustDARTS at 3dec3fed: ``src/search/analyze.py`` (``compute_Hw``,
``_hessian``), ``src/search/train_search.py`` (when it is computed) and ``src/utils.py``
(``EVLocalAvg``). The code builds the full Hessian row by row and takes ``max(eigvals)``; here
power iteration with exact Hessian-vector products (double backward) finds the eigenvalue of
largest magnitude, and a second, shifted run turns it into the largest eigenvalue when it is
negative. The loss is the plain cross-entropy, first order, in train mode (batch statistics), as
the code's, on one validation batch: the first of the validation split, the same every epoch (the
code takes the epoch's last, random α-step batch; a fixed one keeps sampling noise out of the
epoch-to-epoch ratio the rule reads); the code's hidden ``+ arch_weight_decay·I`` shift is left
out. The model is measured on a copy, so no BatchNorm statistic of the search changes.
"""

from __future__ import annotations

import math
from typing import Callable

import torch


def _power(grads, params, iters, tol, generator, shift: float = 0.0) -> float:
    """The eigenvalue of largest magnitude of H − shift·I, H = ∂grads/∂params."""
    v = [torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p) for p in params]
    norm = math.sqrt(sum(float((x * x).sum()) for x in v))
    v = [x / norm for x in v]
    lam = 0.0
    for i in range(iters):
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        hv = [h - shift * x for h, x in zip(hv, v)]
        new = sum(float((a * b).sum()) for a, b in zip(v, hv))  # Rayleigh quotient vᵀHv
        n = math.sqrt(sum(float((h * h).sum()) for h in hv))
        if n == 0:
            return 0.0
        v = [h.detach() / n for h in hv]
        if i and abs(new - lam) <= tol * max(abs(new), 1e-12):
            return new
        lam = new
    return lam


def dominant_eigenvalue(loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor],
                        iters: int = 20, tol: float = 1e-4,
                        generator: torch.Generator | None = None) -> float:
    """The largest eigenvalue λ_max of ∇²_params ``loss_fn()`` (RobustDARTS's ``max(eigvals)``),
    by power iteration with exact Hessian-vector products (at most ``iters`` per run; a run
    stops when its estimate changes by < ``tol`` relative). Power iteration finds the
    eigenvalue of largest magnitude, λ₁; when λ₁ < 0, a second run on H − λ₁·I (whose
    eigenvalues λ − λ₁ are ≥ 0, largest for λ_max) gives λ_max = its result + λ₁."""
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    lam = _power(grads, params, iters, tol, generator)
    if lam < 0:
        lam = _power(grads, params, iters, tol, generator, shift=lam) + lam
    return lam


def eigenvalue_stop(values: list[tuple[int, float]], every: int, window: int = 5,
                    delta: int = 4, factor: float = 1.3,
                    start_epoch: int = 10) -> tuple[str, int] | None:
    """DARTS-ES on the eigenvalues measured so far, ``[(epoch, λ), ...]`` every ``every``
    epochs (0-based epoch indices, as the code's): (reason, epoch whose cell the code returns)
    when the search should stop, else None.

    Local averages (``EVLocalAvg``) start at the ⌈window/2⌉-th value: the mean of all values
    while fewer than ``window`` exist, then of the last ``window``; each is dated
    epoch − every·⌊window/2⌋. Stop when the newest average over the one ``delta`` averages
    earlier exceeds ``factor`` (the code's ``--factor`` 1.3), once the newest average's date −
    every·``delta`` ≥ ``start_epoch``; the code then returns the cell of that epoch (date −
    every·``delta``: with the defaults 12 epochs before the one that stops). An earlier average
    ≤ 0 never stops the search (a ratio of it says nothing).
    """
    first = math.ceil(window / 2)
    if len(values) < first:
        return None
    avgs = []
    for i in range(first - 1, len(values)):
        chunk = [v for _, v in values[max(0, i + 1 - window):i + 1]]
        avgs.append(sum(chunk) / len(chunk))
    date = values[-1][0] - every * (window // 2)
    back = date - every * delta
    if back < start_epoch or len(avgs) <= delta:
        return None
    prev, cur = avgs[-1 - delta], avgs[-1]
    if prev > 0 and cur / prev > factor:
        return (f"Hessian eigenvalue local average rose {cur / prev:.2f}x (> {factor:g}) over "
                f"{every * delta} epochs (DARTS-ES; its cell: epoch {back})", back)
    return None
