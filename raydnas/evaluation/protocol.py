"""Training protocols for evaluating a found cell from scratch (``raydnas evaluate``).

A protocol is the network size and the training recipe. Presets, each key overridable:

* ``darts``: quark0/darts ``cnn/train.py`` (also DARTS-PRIME's ``train.py``): 20 cells,
  36 channels, batch 96, SGD lr 0.025 cosine to 0, momentum 0.9, weight decay 3e-4, 600 epochs,
  cutout 16, auxiliary head weight 0.4, drop-path 0.2 (ramped linearly over the epochs), gradient
  clipping 5. For cells of a space with the ``darts`` macro.
* ``nb201``: NAS-Bench-201's training of its cells (Dong & Yang 2020, §2.3; AutoDL-Projects
  ``TinyNetwork``): C 16, N 5 cells per stage, SGD Nesterov momentum 0.9, lr 0.1 cosine to 0,
  weight decay 5e-4, batch 256, 200 epochs, no cutout, no auxiliary head. For cells of a space
  with the ``nb201`` macro.
* ``darts_short`` / ``nb201_short``: the same networks and schedules for 20 / 12 epochs (NB201's
  own short budget is 12 epochs). A first ranking, labelled ``short`` in every output: their
  accuracies are not the papers' numbers. ``nb201_short`` also has ``reduction: light``: with
  NAS-Bench-201's residual blocks between the stages the identity cell (one skip edge) scored
  0.983 on the embedded digits, within noise of the best conv cell (0.986), because the blocks
  carry the network; with light reductions it scores 0.751 against 0.985 (2 seeds, 360 test
  images, measured 2026-12-02). ``--set reduction=residual`` restores the published network.
* ``darts_cpu``: DARTS's recipe (SGD, cosine, drop-path, clipping) on a small network (4
  channels, 3 cells, no auxiliary head), batch 64, 10 epochs, no cutout: the default for the
  embedded digits (8×8 images), also labelled ``short``. It is this small so that the cell
  decides: with 16 channels and 8 cells the cells' 1×1 preprocessing alone fits the digits, and
  the tiny space's all-pool cell (0.976) and all-skip cell (0.964) scored within noise of its
  all-sep-conv cell (0.971; 2 seeds each, 360 test images); at 4 channels and 3 cells they
  score 0.882 and 0.900 against 0.961, told apart (measured 2026-12-02).

The short protocols also hold out ``val_fraction`` 0.2 of the training split (fixed images,
the same for every cell) and report ``eval_val_acc`` on it: the validation truth a study may
select on (``optuna.metric: eval_val_acc``); test accuracy is only ever reported. The paper
protocols train on the whole training split, as the papers do (``val_fraction`` 0).
``reduction`` (nb201 macro): ``residual`` is NAS-Bench-201's ResNet block between stages,
``light`` only its 1×1 shortcut (:class:`raydnas.model.macro.LightReduction`), so that the cells
carry the network's nonlinearity.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, one_of


@dataclass(frozen=True)
class Protocol:
    """One training recipe; see the module docstring for the presets."""

    name: str
    macro: str              # the macro skeleton it builds: darts or nb201
    channels: int
    cells: int              # darts: cells in all; nb201: cells per stage
    epochs: int
    batch_size: int
    lr: float
    lr_min: float
    momentum: float
    nesterov: bool
    weight_decay: float
    grad_clip: float        # 0: none
    auxiliary_weight: float  # 0: no auxiliary head
    drop_path: float
    cutout: int             # 0: none
    short: bool = False     # a reduced budget, not the paper's protocol
    #: share of the training split held out as a fixed validation part (the same images for
    #: every cell and seed): the network trains on the rest and reports ``eval_val_acc`` on it
    val_fraction: float = 0.0
    #: nb201 macro: the block between stages, ``residual`` (NAS-Bench-201's) or ``light``
    reduction: str = "residual"

    @property
    def label(self) -> str:
        epochs = f"{self.epochs} epoch" + ("" if self.epochs == 1 else "s")
        return f"{self.name} ({epochs}, SHORT budget)" if self.short else self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_DARTS = Protocol("darts", "darts", channels=36, cells=20, epochs=600, batch_size=96, lr=0.025,
                  lr_min=0.0, momentum=0.9, nesterov=False, weight_decay=3e-4, grad_clip=5.0,
                  auxiliary_weight=0.4, drop_path=0.2, cutout=16)
_NB201 = Protocol("nb201", "nb201", channels=16, cells=5, epochs=200, batch_size=256, lr=0.1,
                  lr_min=0.0, momentum=0.9, nesterov=True, weight_decay=5e-4, grad_clip=0.0,
                  auxiliary_weight=0.0, drop_path=0.0, cutout=0)
PROTOCOLS: dict[str, Protocol] = {
    "darts": _DARTS,
    "nb201": _NB201,
    "darts_short": dataclasses.replace(_DARTS, name="darts_short", epochs=20, short=True,
                                       val_fraction=0.2),
    "nb201_short": dataclasses.replace(_NB201, name="nb201_short", epochs=12, short=True,
                                       val_fraction=0.2, reduction="light"),
    "darts_cpu": dataclasses.replace(_DARTS, name="darts_cpu", channels=4, cells=3, epochs=10,
                                     batch_size=64, cutout=0, auxiliary_weight=0.0, short=True,
                                     val_fraction=0.2),
}


def default_protocol(macro: str, dataset: str) -> str:
    """The short protocol of a macro; on the embedded 8×8 digits the DARTS one is ``darts_cpu``
    (the search network's size, 10 epochs, no cutout), which a CPU trains in about a minute."""
    if macro == "darts":
        return "darts_cpu" if dataset == "digits" else "darts_short"
    return "nb201_short"
#: keys of a protocol a user may override (``--set epochs=2``, ``evaluate: {set: {...}}``)
KEYS = tuple(f.name for f in dataclasses.fields(Protocol) if f.name not in ("name", "macro"))
#: a retraining variant of a protocol is named ``<protocol>@<variant>`` (``evaluate.variants``)
VARIANT_SEP = "@"


def _check(p: Protocol, where: str) -> None:
    ints = {"channels": 2, "cells": 1, "epochs": 1, "batch_size": 1, "cutout": 0}
    for k, lo in ints.items():
        v = getattr(p, k)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(where, k, v, f"an integer >= {lo}")
    nums = {"lr": (0, False), "lr_min": (0, True), "weight_decay": (0, True),
            "grad_clip": (0, True), "auxiliary_weight": (0, True)}
    for k, (lo, incl) in nums.items():
        v = getattr(p, k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v < lo or (v == lo and not incl):
            raise ConfigError(where, k, v, f"a number {'>=' if incl else '>'} {lo}")
    for k in ("momentum", "drop_path"):
        v = getattr(p, k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
            raise ConfigError(where, k, v, "a number in [0, 1)")
    v = p.val_fraction
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 0.5:
        raise ConfigError(where, "val_fraction", v, "a number in [0, 0.5] (0: no validation part)")
    if p.reduction not in ("residual", "light") or (p.macro == "darts"
                                                    and p.reduction != "residual"):
        raise ConfigError(where, "reduction", p.reduction,
                          "residual or light (nb201 macro; the darts macro reduces in its "
                          "reduction cells: residual)")
    for k in ("nesterov", "short"):
        if not isinstance(getattr(p, k), bool):
            raise ConfigError(where, k, getattr(p, k), "true or false")
    if p.macro == "darts" and p.channels % 2:
        raise ConfigError(where, "channels", p.channels, "an even number (FactorizedReduce)")


def resolve(name: str, overrides: dict[str, Any] | None = None,
            where: str = "raydnas evaluate") -> Protocol:
    """A preset with overrides, checked; each problem is one ConfigError line."""
    one_of(where, "protocol", name, tuple(PROTOCOLS))
    overrides = dict(overrides or {})
    for k in overrides:
        if k not in KEYS:
            raise ConfigError(where, k, overrides[k],
                              f"a protocol key: {', '.join(KEYS)}")
    v = overrides
    for k in ("lr", "lr_min", "momentum", "weight_decay", "grad_clip", "auxiliary_weight",
              "drop_path", "val_fraction"):
        if isinstance(v.get(k), int) and not isinstance(v.get(k), bool):
            v[k] = float(v[k])
    p = dataclasses.replace(PROTOCOLS[name], **v)
    _check(p, where)
    return p
