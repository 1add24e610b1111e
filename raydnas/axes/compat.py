"""Which combinations of the four axes cannot run, decided from properties the choices declare.

No rule names a choice: a new choice declares its properties and is checked like the others.

* a regularizer that ``requires_normalized`` needs an activation whose a(α) is ``normalized``
  (a distribution over each edge's ops);
* a regularizer that ``requires_concentration`` (DrNAS's KL) needs an activation that
  ``has_concentration`` (a Dirichlet);
* a choice that ``replaces_weight_step_weights`` (SDARTS) hands the weight step constants,
  so a ``joint`` (single-level) gradient would get no α gradient from it;
* a choice's ``requested_val_fraction`` sizes the validation split of the α steps, so the
  gradient must use one (``needs_val``);
* an ``alpha_free`` activation (RSPS's random paths) takes no α: its schedule must not step α
  (``steps_alpha``), its regularizer must not pull on α (``acts_on_alpha``) and its gradient
  must be the ``plain`` one; and a schedule that never steps α goes only with such an
  activation (an α-dependent one would train under its initial op weights and call that a
  search).

Accepted on purpose:

* stochastic activations with ``unrolled``/``implicit``: both estimators hold the noise fixed
  for the whole α step (``SearchContext.frozen_noise``), so the virtual step and the Hessian
  products differentiate one reparametrized sample of the objective.
* ``crb`` with ``prox``/``admm``: Maile et al.'s own combination.
* ``single_level`` with any schedule: an α step then shares the scheduled weight step's backward.
"""

from __future__ import annotations

from typing import Any

from .activation import ACTIVATIONS  # the registry: every choice has registered by call time


def incompatibility(parts: dict[str, Any],
                    params: dict[str, dict[str, Any]] | None = None) -> str | None:
    """A sentence saying why the method cannot run, or None if it can.

    ``parts``: axis name → the constructed choice (``AxisChoice`` instances); ``params``: the
    hyperparameters each was given (named in the message).
    """
    act, grad, reg = parts["activation"], parts["gradient"], parts["regularizer"]
    if act.alpha_free:
        why = f"activation {_name(act)!r} draws its op weights without α, so "
        if parts["schedule"].steps_alpha:
            return why + (f"schedule {_name(parts['schedule'])!r} would step an α that does "
                          "nothing; use schedule never")
        if reg.acts_on_alpha:
            return why + f"regularizer {_name(reg)!r} has no α to pull on; use regularizer none"
        if not grad.plain:
            return why + (f"gradient {_name(grad)!r} has no α to differentiate; use gradient "
                          "first_order (inert without α steps)")
    elif not parts["schedule"].steps_alpha:
        ok = [n for n in ACTIVATIONS.names() if ACTIVATIONS.get(n).alpha_free]
        return (f"schedule {_name(parts['schedule'])!r} never steps α, so activation "
                f"{_name(act)!r} would train under its initial op weights; use an activation "
                f"that takes no α ({', '.join(ok)}) or a schedule that steps α")
    if act.score_function and not grad.plain:
        return (f"activation {_name(act)!r} with a score-function estimator (REINFORCE, REBAR, "
                f"RELAX) takes α's gradient from its own surrogate, which gradient "
                f"{_name(grad)!r} does not differentiate; use gradient first_order")
    if act.score_function and getattr(reg, "reads_sampled_weights", False):
        return (f"regularizer {_name(reg)!r} (form snas) reads the sampled op weights, which a "
                f"score-function estimator of activation {_name(act)!r} keeps constant (no "
                "gradient to α); use form: cell or a target")
    if reg.requires_normalized and not act.normalized:
        ok = [n for n in ACTIVATIONS.names() if ACTIVATIONS.get(n).normalized]
        return (f"regularizer {_name(reg)!r} needs each edge's op weights to be a distribution "
                f"over its ops, but activation {_name(act)!r} weights do not sum to 1; use one "
                f"of {', '.join(ok)}")
    if reg.requires_concentration and not act.has_concentration:
        ok = [n for n in ACTIVATIONS.names() if ACTIVATIONS.get(n).has_concentration]
        return (f"regularizer {_name(reg)!r} is a divergence between Dirichlet distributions, "
                f"but activation {_name(act)!r} draws no Dirichlet; use {', '.join(ok)}")
    if grad.joint:
        for axis, part in parts.items():
            if part.replaces_weight_step_weights:
                return (f"{axis} {_name(part)!r} trains the weights under constant op weights, "
                        f"but gradient {_name(grad)!r} takes α's gradient from that same weight "
                        "step; use a bilevel gradient (first_order, unrolled, implicit, "
                        "mixed_level)")
    if not grad.needs_val:
        for axis, part in parts.items():
            if part.requested_val_fraction is not None:
                given = ", ".join(f"{k}: {v}" for k, v in (params or {}).get(axis, {}).items())
                return (f"{axis} {_name(part)!r}" + (f" ({given})" if given else "")
                        + f" asks for a validation split of {part.requested_val_fraction:.6g} "
                        f"for the α steps, but gradient {_name(grad)!r} uses no validation "
                        "split; drop the option that asks for it")
    return None


def _name(part: Any) -> str:
    return getattr(type(part), "registered_name", type(part).__name__)
