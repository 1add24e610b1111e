"""Which combinations of the four axes make no sense, and why (checked by config validation).

Everything else runs. Notes on combinations that are accepted on purpose:

* ``gumbel``/``gumbel_hard`` with ``unrolled``/``implicit``: both estimators hold the Gumbel
  noise fixed for the whole α step (``Activation.frozen_noise``), so the virtual step and the
  Hessian products differentiate one reparametrized sample of the objective rather than the
  difference of two independent samples (which would be noise divided by 2ε).
* ``crb`` with ``prox``/``admm``: Maile et al.'s own combination; clamped weights can reach the
  binary targets exactly.
* ``single_level`` with any schedule: an α step then shares the scheduled weight step's backward.
"""

from __future__ import annotations

from typing import Any


def incompatibility(method: dict[str, str],
                    params: dict[str, dict[str, Any]] | None = None) -> str | None:
    """A sentence saying why ``method`` (axis → choice name) cannot run, or None if it can."""
    from . import ACTIVATIONS

    params = params or {}
    act, grad = method.get("activation"), method.get("gradient")
    sched, reg = method.get("schedule"), method.get("regularizer")
    if reg == "resource" and act in ACTIVATIONS and not ACTIVATIONS.get(act).normalized:
        return (f"the resource penalty is the log of an expected cost under a categorical "
                f"distribution over each edge's ops, but {act!r} weights are independent gates "
                f"that do not sum to 1, so the penalty would only push every weight toward 0"
                + (" and crb would prune those ops for good" if act == "crb" else "")
                + "; use softmax, gumbel or gumbel_hard with resource")
    if grad == "single_level" and sched == "informed" \
            and params.get("schedule", {}).get("match_split"):
        return ("schedule.match_split sizes the validation split for the α steps "
                "(1/(1+s)), but single_level takes α's gradient from the training loss and uses "
                "no validation split; drop match_split")
    return None
