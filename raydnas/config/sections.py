"""The sections of an experiment config (``data``, ``model``, ``optim``, ``measure``, ``log``) as
typed dataclasses, and :func:`build_section`, which validates one raw mapping into one of them.

A field's ``metadata["check"]`` is ``(predicate, what is allowed)``; every problem is one
:class:`~raydnas.errors.ConfigError` line naming the file, the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError


def _pos(v):
    return v > 0


def _nonneg(v):
    return v >= 0


@dataclass
class DataConfig:
    """``data:``: the dataset, its split and batches."""
    dataset: str = "digits"
    root: str | None = None
    download: bool = False
    val_fraction: float = field(
        default=0.5, metadata={"check": (lambda v: 0 <= v < 1, "a number in [0, 1)")})
    batch_size: int = field(default=64, metadata={"check": (_pos, "an integer > 0")})
    num_workers: int = field(default=0, metadata={"check": (_nonneg, "an integer >= 0")})
    augment: bool | None = None
    image_size: int | None = field(default=None, metadata={"check": (_pos, "an integer > 0")})
    test_root: str | None = None  # imagefolder: the test images (read by raydnas evaluate only)


@dataclass
class ModelConfig:
    """``model:``: the supernet's width and depth (null: the space's defaults)."""
    channels: int | None = field(default=None, metadata={
        "check": (lambda v: v >= 2 and v % 2 == 0, "an even integer >= 2")})
    cells: int | None = field(default=None, metadata={"check": (_pos, "an integer > 0")})
    #: PC-DARTS (Xu et al., ICLR 2020): K, the mixed ops see 1/K of the channels (1: off;
    #: the paper's 4); the supernet's channels must be a multiple of 2K
    partial_channels: int = field(default=1, metadata={"check": (_pos, "an integer >= 1")})
    #: PC-DARTS's edge normalization: a softmax-normalized β per incoming edge of each node
    edge_norm: bool = False
    #: DARTS- (Chu et al., ICLR 2021): β₀ of an auxiliary skip on every edge (0: none; the
    #: paper's 1.0), decayed per epoch by ``aux_skip_decay`` over ``aux_skip_epochs``
    aux_skip_beta: float = field(default=0.0, metadata={"check": (_nonneg, "a number >= 0")})
    aux_skip_decay: str = field(default="linear", metadata={
        "check": (lambda v: v in ("linear", "constant"), "linear or constant")})
    aux_skip_epochs: int | None = field(default=None, metadata={
        "check": (_pos, "an integer > 0 or null (the search's epochs)")})

    def aux_beta(self, epoch: int, epochs: int) -> float:
        """β of the auxiliary skips during the epoch after ``epoch`` completed ones.

        ``linear`` (Meituan-AutoML/DARTS- at adb81a83, ``src/utils.py`` ``DecayScheduler``,
        ``--decay linear``, stepped at each epoch's start): β_e = β₀·(T − e)/T, T =
        ``aux_skip_epochs`` or the search's epochs, 0 after T (the code's T is
        ``--decay_max_epoch`` 50 = its epochs, so its last epoch has β = β₀/T, never 0);
        ``constant``: β₀ (the code's ``--decay`` default None)."""
        if self.aux_skip_decay == "constant":
            return self.aux_skip_beta
        T = self.aux_skip_epochs or epochs
        return self.aux_skip_beta * max(0.0, (T - epoch) / T)


@dataclass
class OptimConfig:
    """``optim:``: the weight and α optimizers, with DARTS's defaults (Liu et al. 2019, §A.1.1)."""

    w_lr: float = field(default=0.025, metadata={"check": (_pos, "a number > 0")})
    w_lr_min: float = field(default=0.001, metadata={"check": (_nonneg, "a number >= 0")})
    w_momentum: float = field(
        default=0.9, metadata={"check": (lambda v: 0 <= v < 1, "a number in [0, 1)")})
    w_nesterov: bool = False
    w_weight_decay: float = field(default=3e-4, metadata={"check": (_nonneg, "a number >= 0")})
    w_grad_clip: float = field(default=5.0, metadata={"check": (_pos, "a number > 0")})
    a_optimizer: str = field(
        default="adam", metadata={"check": (lambda v: v in ("adam", "sgd"), "adam or sgd")})
    a_lr: float = field(default=3e-4, metadata={"check": (_pos, "a number > 0")})
    a_betas: list[float] = field(default_factory=lambda: [0.5, 0.999], metadata={
        "check": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)")})
    a_weight_decay: float = field(default=1e-3, metadata={"check": (_nonneg, "a number >= 0")})


DEFAULT_BN_IMAGES = 512


@dataclass
class MeasureConfig:
    """How the per-epoch accuracies are measured (:mod:`raydnas.search.measure`).

    ``bn_images``: search-train images on which BatchNorm statistics are re-estimated before
    every accuracy is measured (the same fixed images for every method at a given seed; null:
    ``DEFAULT_BN_IMAGES`` or the whole search-train split if it is smaller).
    ``samples``: sampled architectures (fixed, seeded Gumbel noise) that ``val_acc`` averages
    for stochastic activations. ``tune_epochs``: epochs of fine-tuning of the derived network
    from its inherited weights at the end of the search (``discrete_val_acc_tuned``; 0: off).
    ``tune_lr``: its initial learning rate (cosine to 0; null: ``optim.w_lr``).
    """

    bn_images: int | None = field(default=None,
                                  metadata={"check": (_pos, "an integer > 0 or null")})
    samples: int = field(default=4, metadata={"check": (_pos, "an integer > 0")})
    tune_epochs: int = field(default=1, metadata={"check": (_nonneg, "an integer >= 0 (0: off)")})
    tune_lr: float | None = field(default=None, metadata={"check": (_pos, "a number > 0")})
    #: RobustDARTS's signal: the dominant eigenvalue of ∇²_α L_val every this many epochs
    #: (and at the last; 0: off), by power iteration of at most ``hessian_iters`` products
    hessian_every: int = field(default=0, metadata={"check": (_nonneg, "an integer >= 0 (0: off)")})
    hessian_iters: int = field(default=20, metadata={"check": (_pos, "an integer > 0")})
    #: measure every candidate op's latency on the search's device at its start (cached per
    #: device and op shape; :mod:`raydnas.model.latency`) and log the derived cell's
    #: ``cell_latency_ms`` every epoch (always on with ``regularizer: {cost: latency}``)
    latency: bool = False


@dataclass
class StopConfig:
    """``stop:``: rules that end a search early, each off by default: ``dead``, ``collapsed``
    and ``margin_stall_epochs`` (:mod:`raydnas.search.stop_rules`, from epoch ``rules_min_epochs``),
    and the Hessian rule (:mod:`raydnas.search.hessian`).

    ``hessian_factor``: DARTS-ES (Zela et al., ICLR 2020): stop when the local average of the
    Hessian eigenvalue (``measure.hessian_every``) over ``hessian_window`` values rose by more
    than this factor over ``hessian_delta`` averages (the code's 1.3), checked once that span
    starts at ``hessian_start_epoch`` or later (0-based epoch indices, as the code's; null:
    off); ``hessian_rollback``: the stopped search's cell is the code's
    (:mod:`raydnas.search.hessian`).
    """

    hessian_factor: float | None = field(default=None, metadata={
        "check": (lambda v: v > 1, "a number > 1 or null (off)")})
    hessian_window: int = field(default=5, metadata={"check": (_pos, "an integer > 0")})
    hessian_delta: int = field(default=4, metadata={"check": (_pos, "an integer > 0")})
    hessian_start_epoch: int = field(default=10, metadata={"check": (_nonneg, "an integer >= 0")})
    #: on a DARTS-ES stop the search's cell is the one of the epoch the code returns (true, the
    #: code's) or the stopping epoch's (false; the code's cell is then ``early_stop_genotype``)
    hessian_rollback: bool = True
    #: the rules of :mod:`raydnas.search.stop_rules` (each off by default)
    dead: bool = False
    collapsed: float | None = field(default=None, metadata={
        "check": (lambda v: 0 < v <= 1, "a share in (0, 1] or null (off)")})
    margin_stall_epochs: int | None = field(default=None, metadata={
        "check": (_pos, "an integer > 0 or null (off)")})
    margin_stall_delta: float = field(default=0.005, metadata={"check": (_pos, "a number > 0")})
    rules_min_epochs: int = field(default=2, metadata={"check": (_pos, "an integer > 0")})


@dataclass
class SelectConfig:
    """``select:``: how the final cell is selected (:mod:`raydnas.search.selection`).

    ``name``: ``argmax`` (the space's rule), ``threshold`` (FairDARTS: ops below
    ``threshold`` dropped), ``pt`` (DARTS-PT's perturbation-based selection, with
    ``pt_tune_epochs`` of supernet training between decisions at ``pt_lr``; null: w_lr/10) or
    ``random_ws`` (RSPS: ``samples`` random cells screened on ``screen_batches`` validation
    batches under the shared weights, the ``top`` of them measured on the whole validation
    part, the best kept)."""

    name: str = field(default="argmax", metadata={
        "check": (lambda v: v in ("argmax", "threshold", "pt", "random_ws"),
                  "argmax, threshold, pt or random_ws")})
    threshold: float = field(default=0.85, metadata={
        "check": (lambda v: 0 <= v <= 1, "a number in [0, 1]")})
    pt_tune_epochs: int = field(default=5, metadata={"check": (_nonneg, "an integer >= 0")})
    pt_lr: float | None = field(default=None, metadata={"check": (_pos, "a number > 0")})
    samples: int = field(default=100, metadata={"check": (_pos, "an integer >= 1")})
    top: int = field(default=10, metadata={"check": (_pos, "an integer >= 1")})
    screen_batches: int = field(default=10, metadata={"check": (_pos, "an integer >= 1")})


@dataclass
class SpeedConfig:
    """``speed:``: levers that change how fast a search runs, never its numbers (so a run may
    resume with other values). ``fuse``: ops of one kind on the edges leaving one node run as
    one wider kernel (:mod:`raydnas.model.fusion`; off by default: slower on CPU, see
    benchmarks/README.md)."""

    fuse: bool = False


@dataclass
class ObjectiveConfig:
    """``objective:``: what the α step minimizes. ``val``: L_val (DARTS). ``gen_gap`` (UNAS,
    Vahdat et al., CVPR 2020): L_train + λ·|L_val − L_train|, both on the same sampled
    architecture (λ ``lam``, UNAS's commands 0.5), to penalize a cell that generalizes badly."""
    name: str = field(default="val", metadata={
        "check": (lambda v: v in ("val", "gen_gap"), "val or gen_gap")})
    lam: float = field(default=0.5, metadata={"check": (lambda v: v > 0, "a number > 0")})


@dataclass
class LogConfig:
    """``log:``: TensorBoard, histograms and the console."""
    tensorboard: bool = True
    histograms: bool = True
    print_every: int = field(
        default=20, metadata={"check": (_nonneg, "an integer >= 0 (0: quiet)")})


@dataclass
class AxisConfig:
    """One axis block: the choice's name and its hyperparameters."""
    name: str
    params: dict[str, Any] = field(default_factory=dict)


def _type_ok(value: Any, ann: str) -> bool:
    ann = str(ann)
    if value is None:
        return "None" in ann
    if ann.startswith("bool"):
        return isinstance(value, bool)
    if ann.startswith("int"):
        return isinstance(value, int) and not isinstance(value, bool)
    if ann.startswith("float"):
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if ann.startswith("str"):
        return isinstance(value, str)
    if ann.startswith("list"):
        return isinstance(value, list) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
    return True


_TYPE_WORDS = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
               "list": "a list of numbers"}


def build_section(cls, raw: Any, prefix: str, f: str):
    """Validate the mapping ``raw`` (the section at key ``prefix`` of file ``f``) into ``cls``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f, prefix, raw, "a mapping")
    fields = {fd.name: fd for fd in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in raw.items():
        if k not in fields:
            raise ConfigError(f, f"{prefix}.{k}", v, f"unknown key; allowed: {', '.join(fields)}")
        fd = fields[k]
        if not _type_ok(v, fd.type):
            word = _TYPE_WORDS.get(str(fd.type).split(" ")[0].split("[")[0], str(fd.type))
            if "None" in str(fd.type):
                word += " or null"
            raise ConfigError(f, f"{prefix}.{k}", v, word)
        check = fd.metadata.get("check")
        if check is not None and v is not None and not check[0](v):
            raise ConfigError(f, f"{prefix}.{k}", v, check[1])
        if str(fd.type).startswith("float") and isinstance(v, int):
            v = float(v)
        kwargs[k] = v
    return cls(**kwargs)
