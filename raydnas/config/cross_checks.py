"""Checks across an experiment's sections (each problem one ConfigError line, before anything
runs): supernet options against the space, the speed levers and the measurement; the splits
against the gradient and, where the dataset's size is known now, the batch sizes."""

from __future__ import annotations

from typing import Any

from ..axes import AXES
from ..data.datasets import IMAGE_CHANNELS, IMAGE_SIDE, check_split, known_size
from ..errors import ConfigError
from ..model.data_mix import parse_data_search


def check_model(f: str, sections: dict[str, Any], space: Any) -> None:
    """Supernet options that cannot go with the space, the speed levers or the measurement."""
    model, K = sections["model"], sections["model"].partial_channels
    L = model.cells or space.cells
    if space.macro == "darts" and L < 3:
        raise ConfigError(f, "model.cells", L,
                          f"an integer >= 3 for space {space.name!r}: its reduction cells sit "
                          "at 1/3 and 2/3 of the depth, so fewer cells leave no normal cell "
                          "to search")
    if K == 1:
        return
    C = model.channels or space.channels
    need = 2 * K if space.macro == "darts" else K
    if C % need:
        why = " (FactorizedReduce halves them)" if space.macro == "darts" else ""
        raise ConfigError(f, "model.partial_channels", K,
                          f"a K that divides the supernet's {C} channels into C/K per op"
                          f"{why}: C must be a multiple of {need}")
    if sections["measure"].tune_epochs:
        raise ConfigError(f, "measure.tune_epochs", sections["measure"].tune_epochs,
                          f"0 with model.partial_channels {K}: the supernet's ops hold C/K "
                          "channels, so a derived network cannot inherit them for fine-tuning")
    if sections["speed"].fuse:
        raise ConfigError(f, "speed.fuse", True,
                          f"false with model.partial_channels {K} (fused kernels see all channels)")


def check_sizes(cfg: Any) -> None:
    """A gradient that reads val batches needs a val split; where the dataset's size is known
    now (digits), the batch and ``measure.bn_images`` must fit its splits."""
    needs_val = AXES["gradient"].get(cfg.gradient.name).needs_val
    if needs_val and cfg.data.val_fraction <= 0:
        raise ConfigError(cfg.source, "data.val_fraction", cfg.data.val_fraction,
                          f"> 0: gradient {cfg.gradient.name!r} needs a validation split")
    n = known_size(cfg.data.dataset)
    if n is not None:
        check_split(cfg.source, cfg.data.dataset, n, cfg.data.val_fraction, cfg.data.batch_size,
                    needs_val, cfg.measure.bn_images)


def check_objective(f: str, sections: dict[str, Any], gradient: str,
                    parts: dict[str, Any]) -> None:
    """What α's objective needs: ``objective: gen_gap`` both losses in one α step (first
    order's); a score-function estimator, no Hessian of a loss that does not depend on α."""
    objective, part = sections["objective"], parts["gradient"]
    hess = sections["measure"].hessian_every
    if parts["activation"].score_function and hess:
        raise ConfigError(f, "measure.hessian_every", hess,
                          "0 with a score-function estimator (reinforce, rebar, relax): the "
                          "loss of a sampled one-hot path does not depend on α, so ∇²_α L_val has "
                          "nothing to measure")
    if objective.name == "val":
        return
    if not part.needs_val:
        raise ConfigError(f, "objective.name", objective.name,
                          f"val with gradient {gradient!r}: a single-level search steps α on "
                          "the training loss alone, so there is no validation loss whose gap "
                          "to the training loss could be penalized")
    if not part.plain:
        raise ConfigError(f, "objective.name", objective.name,
                          f"val with gradient {gradient!r} (gen_gap is built for gradient "
                          "first_order, whose α step differentiates the objective itself)")


def check_data_search(f: str, block: Any, sections: dict[str, Any], parts: dict[str, Any]):
    """``data_search:`` (:mod:`raydnas.model.data_mix`): valid, and with an activation whose
    weights a(γ) can mix K inputs: a deterministic or reparameterized one over γ alone."""
    side = sections["data"].image_size or IMAGE_SIDE.get(sections["data"].dataset)
    spec = parse_data_search(block, f, side, IMAGE_CHANNELS.get(sections["data"].dataset))
    if spec is None:
        return None
    act = parts["activation"]
    name = getattr(type(act), "registered_name", type(act).__name__)
    if act.alpha_free or act.score_function or not act.normalized or act.drops_ops:
        raise ConfigError(f, "activation", name, "one that weighs data_search's K inputs by "
                          "a distribution over them: softmax, or gumbel, gumbel_hard or "
                          "dirichlet with estimator relaxed")
    if sections["measure"].tune_epochs:
        raise ConfigError(f, "measure.tune_epochs", sections["measure"].tune_epochs,
                          "0 with data_search: the fine-tuned derived network would inherit "
                          "weights trained on the mixed, aligned input")
    return spec
