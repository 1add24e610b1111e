"""Experiment configs: YAML → typed, validated objects.

Every problem becomes one :class:`~raydnas.errors.ConfigError` line naming the file, the key
path, the value and what is allowed, before anything starts. Unknown keys are errors.

Layout of an experiment YAML (all keys optional but ``space``)::

    space: tiny                  # a built-in space name or a path to a space YAML
    epochs: 10
    seed: 0
    data: {dataset: digits, val_fraction: 0.5, batch_size: 64}
    model: {channels: 8, cells: 3}   # override the space's macro defaults
    activation: softmax          # or {name: softmax, ...hyperparameters}
    gradient: first_order
    schedule: every
    regularizer: none            # e.g. {name: admm, rho: 0.1}
    optim: {w_lr: 0.025, ...}
    log: {tensorboard: true, print_every: 20}
    measure: {bn_images: null, samples: 4, tune_epochs: 1}   # raydnas.measure
    sweep: {...}                 # used by `raydnas sweep` (see raydnas.sweep)
    optuna: {...}
    evaluate: {...}              # the sweep's evaluation stage (raydnas.sweep.study)
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, one_of

AXIS_NAMES = ("activation", "gradient", "schedule", "regularizer")
DEFAULT_METHOD = {"activation": "softmax", "gradient": "first_order", "schedule": "every",
                  "regularizer": "none"}


def _pos(v):
    return v > 0


def _nonneg(v):
    return v >= 0


@dataclass
class DataConfig:
    dataset: str = "digits"
    root: str | None = None
    download: bool = False
    val_fraction: float = field(default=0.5, metadata={"check": (lambda v: 0 <= v < 1, "a number in [0, 1)")})
    batch_size: int = field(default=64, metadata={"check": (_pos, "an integer > 0")})
    num_workers: int = field(default=0, metadata={"check": (_nonneg, "an integer >= 0")})
    augment: bool | None = None
    image_size: int | None = field(default=None, metadata={"check": (_pos, "an integer > 0")})
    test_root: str | None = None  # imagefolder: the test images (read by raydnas evaluate only)


@dataclass
class ModelConfig:
    channels: int | None = field(default=None, metadata={"check": (lambda v: v >= 2 and v % 2 == 0, "an even integer >= 2")})
    cells: int | None = field(default=None, metadata={"check": (_pos, "an integer > 0")})


@dataclass
class OptimConfig:
    """Paper defaults (DARTS §1.2 in ALGORITHMS.md)."""

    w_lr: float = field(default=0.025, metadata={"check": (_pos, "a number > 0")})
    w_lr_min: float = field(default=0.001, metadata={"check": (_nonneg, "a number >= 0")})
    w_momentum: float = field(default=0.9, metadata={"check": (lambda v: 0 <= v < 1, "a number in [0, 1)")})
    w_nesterov: bool = False
    w_weight_decay: float = field(default=3e-4, metadata={"check": (_nonneg, "a number >= 0")})
    w_grad_clip: float = field(default=5.0, metadata={"check": (_pos, "a number > 0")})
    a_optimizer: str = field(default="adam", metadata={"check": (lambda v: v in ("adam", "sgd"), "adam or sgd")})
    a_lr: float = field(default=3e-4, metadata={"check": (_pos, "a number > 0")})
    a_betas: list[float] = field(default_factory=lambda: [0.5, 0.999], metadata={"check": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)")})
    a_weight_decay: float = field(default=1e-3, metadata={"check": (_nonneg, "a number >= 0")})


DEFAULT_BN_IMAGES = 512


@dataclass
class MeasureConfig:
    """How the per-epoch accuracies are measured (:mod:`raydnas.measure`).

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


@dataclass
class LogConfig:
    tensorboard: bool = True
    histograms: bool = True
    print_every: int = field(default=20, metadata={"check": (_nonneg, "an integer >= 0 (0: quiet)")})


@dataclass
class AxisConfig:
    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    space: str
    epochs: int = 10
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    log: LogConfig = field(default_factory=LogConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    activation: AxisConfig = field(default_factory=lambda: AxisConfig("softmax"))
    gradient: AxisConfig = field(default_factory=lambda: AxisConfig("first_order"))
    schedule: AxisConfig = field(default_factory=lambda: AxisConfig("every"))
    regularizer: AxisConfig = field(default_factory=lambda: AxisConfig("none"))
    sweep: dict[str, Any] | None = None
    optuna: dict[str, Any] | None = None
    evaluate: dict[str, Any] | None = None
    source: str = "<config>"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def method(self) -> dict[str, str]:
        return {a: getattr(self, a).name for a in AXIS_NAMES}

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (the form ``from_dict`` and YAML accept)."""
        d = {}
        for f in dataclasses.fields(self):
            if f.name in ("source", "raw"):
                continue
            v = getattr(self, f.name)
            if isinstance(v, AxisConfig):
                v = {"name": v.name, **v.params}
            elif dataclasses.is_dataclass(v):
                v = dataclasses.asdict(v)
            if v is not None:
                d[f.name] = copy.deepcopy(v)
        return d


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "log": LogConfig,
             "measure": MeasureConfig}
_TOP = {"space", "epochs", "seed", "name", "description", *_SECTIONS, *AXIS_NAMES, "sweep", "optuna",
        "evaluate"}


def _type_ok(value: Any, ann: str) -> bool:
    ann = str(ann)
    if value is None:
        return "None" in ann
    if ann.startswith("bool"):
        return isinstance(value, bool)
    if ann.startswith("int"):
        return isinstance(value, int) and not isinstance(value, bool)
    if ann.startswith("float"):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ann.startswith("str"):
        return isinstance(value, str)
    if ann.startswith("list"):
        return isinstance(value, list) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
    return True


_TYPE_WORDS = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
               "list": "a list of numbers"}


def _build_section(cls, raw: Any, prefix: str, f: str):
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


def _axis(raw: Any, axis: str, f: str) -> tuple[AxisConfig, Any]:
    """Validate one axis block: its config and the instance its constructor checked."""
    from .axes import AXES

    reg = AXES[axis]
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f, axis, raw, f"a name ({', '.join(reg.names())}) or a mapping with 'name'")
    name = raw["name"]
    if name not in reg:
        raise ConfigError(f, f"{axis}.name", name, f"one of {', '.join(reg.names())}")
    params = {k: v for k, v in raw.items() if k != "name"}
    cls = reg.get(name)
    sig = inspect.signature(cls)
    accepted = [p for p in sig.parameters if p not in ("self",)]
    for k, v in params.items():
        if k not in accepted:
            allowed = ", ".join(accepted) if accepted else "none"
            raise ConfigError(f, f"{axis}.{k}", v, f"unknown hyperparameter of {axis} {name!r}; allowed: {allowed}")
    cfg = AxisConfig(name, params)
    return cfg, create_axis(axis, cfg, f)  # the constructor checks the values


def create_axis(axis: str, cfg: AxisConfig, f: str | None = None):
    """Instantiate an axis choice; a bad hyperparameter becomes a ConfigError."""
    from .axes import AXES
    from .axes.checks import AxisParamError

    try:
        return AXES[axis].create(cfg.name, **cfg.params)
    except AxisParamError as e:
        raise ConfigError(f, f"{axis}.{e.param}", e.value, e.allowed) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f, axis, {"name": cfg.name, **cfg.params}, str(e)) from None


def from_dict(raw: Any, source: str = "<config>") -> ExperimentConfig:
    """Validate a config mapping (already parsed YAML) into an :class:`ExperimentConfig`."""
    f = source
    if not isinstance(raw, dict):
        raise ConfigError(f, "<top level>", raw, "a mapping of config keys")
    for k, v in raw.items():
        if k not in _TOP:
            raise ConfigError(f, str(k), v, f"unknown key; allowed: {', '.join(sorted(_TOP))}")
    if "space" not in raw:
        raise ConfigError(f, "space", None, "required: a search space name or YAML path")
    from .spaces import load_space

    space = raw["space"]
    if not isinstance(space, str):
        raise ConfigError(f, "space", space, "a search space name or YAML path")
    if not Path(space).is_absolute() and space.endswith((".yaml", ".yml")) and f != "<config>" \
            and not Path(space).exists() and (Path(f).parent / space).exists():
        space = str(Path(f).parent / space)
    load_space(space, where=f, key="space")
    epochs = raw.get("epochs", 10)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f, "epochs", epochs, "an integer >= 1")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f, "seed", seed, "an integer >= 0")
    sections = {k: _build_section(cls, raw.get(k), k, f) for k, cls in _SECTIONS.items()}
    data = sections["data"]
    from .data import DATASETS

    one_of(f, "data.dataset", data.dataset, DATASETS)
    if data.dataset != "digits":
        if not data.root:
            raise ConfigError(f, "data.root", data.root,
                              f"a directory: dataset {data.dataset!r} needs data.root")
        if not data.download and not Path(data.root).exists():
            raise ConfigError(f, "data.root", data.root,
                              "an existing directory (or set data.download: true)")
    checked = {a: _axis(raw[a] if raw.get(a) is not None else DEFAULT_METHOD[a], a, f)
               for a in AXIS_NAMES}
    axes = {a: c for a, (c, _) in checked.items()}
    from .axes.compat import incompatibility

    why = incompatibility({a: c.name for a, c in axes.items()}, {a: c.params for a, c in axes.items()})
    if why:
        raise ConfigError(f, "method", {a: c.name for a, c in axes.items()}, why)
    for a, (c, instance) in checked.items():  # an axis may ask for its own split
        want = getattr(instance, "val_fraction", None)
        if want is None:
            continue
        given = (raw.get("data") or {}).get("val_fraction")
        if given is not None and abs(given - want) > 1e-9:
            raise ConfigError(f, "data.val_fraction", given,
                              f"{want:.6g} or unset: {a} {c.name!r} asks for that split")
        data.val_fraction = want
    for block in ("sweep", "optuna", "evaluate"):
        if block in raw and not isinstance(raw[block], dict):
            raise ConfigError(f, block, raw[block], "a mapping")
    cfg = ExperimentConfig(space=space, epochs=epochs, seed=seed, **sections, **axes,
                           sweep=raw.get("sweep"), optuna=raw.get("optuna"),
                           evaluate=raw.get("evaluate"), source=f,
                           raw=copy.deepcopy(raw))
    _check_sizes(cfg)
    return cfg


def _check_sizes(cfg: ExperimentConfig) -> None:
    """For the embedded dataset the split sizes are known now: check the batch fits."""
    from .axes import GRADIENTS

    needs_val = GRADIENTS.get(cfg.gradient.name).needs_val
    if needs_val and cfg.data.val_fraction <= 0:
        raise ConfigError(cfg.source, "data.val_fraction", cfg.data.val_fraction,
                          f"> 0: gradient {cfg.gradient.name!r} needs a validation split")
    if cfg.data.dataset == "digits":
        from .data import DIGITS_TEST_EVERY

        n = 1797 - len(range(0, 1797, DIGITS_TEST_EVERY))
        n_val = round(n * cfg.data.val_fraction)
        smallest = min(n - n_val, n_val) if needs_val else n - n_val
        if cfg.data.batch_size > smallest:
            raise ConfigError(cfg.source, "data.batch_size", cfg.data.batch_size,
                              f"at most {smallest} (the smaller split of {n} digits images "
                              f"at val_fraction {cfg.data.val_fraction})")
        check_bn_images(cfg, n - n_val)


def check_bn_images(cfg: ExperimentConfig, n_train: int) -> None:
    """``measure.bn_images`` must fit in the search-train split (``n_train`` images)."""
    if cfg.measure.bn_images is not None and cfg.measure.bn_images > n_train:
        raise ConfigError(cfg.source, "measure.bn_images", cfg.measure.bn_images,
                          f"at most {n_train} (the search-train split of {cfg.data.dataset} "
                          f"at val_fraction {cfg.data.val_fraction})")


def apply_overrides(raw: dict, overrides: list[str], source: str = "--set") -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML scalars) to a raw mapping."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(source, item, item,
                              "KEY.PATH=VALUE, e.g. --set epochs=20 or --set regularizer.rho=0.01")
        key, _, text = item.partition("=")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        parts = key.strip().split(".")
        node = raw
        for i, p in enumerate(parts[:-1]):
            nxt = node.get(p)
            if isinstance(nxt, str) and p in AXIS_NAMES and i == 0:
                nxt = {"name": nxt}
            if nxt is None:
                nxt = {}
            if not isinstance(nxt, dict):
                raise ConfigError(source, key, value, f"{'.'.join(parts[:i + 1])} is not a mapping")
            node[p] = nxt
            node = nxt
        last = parts[-1]
        if len(parts) == 1 and last in AXIS_NAMES and isinstance(value, str) \
                and isinstance(node.get(last), dict):
            node[last] = {**node[last], "name": value} if node[last].get("name") == value \
                else {"name": value}
        else:
            node[last] = value
    return raw


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(path), "<file>", str(path), "an existing YAML file")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "<yaml>"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(str(path), where, problem, "valid YAML") from None
    if raw is None:
        raw = {}
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate an experiment YAML."""
    raw = read_yaml(path)
    if overrides:
        if not isinstance(raw, dict):
            raise ConfigError(str(path), "<top level>", raw, "a mapping of config keys")
        raw = apply_overrides(raw, overrides)
    try:
        return from_dict(raw, str(path))
    except ConfigError as e:  # blame a bad --set value on the --set, not on the file
        given = [o for o in overrides or () if "=" in o and _same_key(o.partition("=")[0], e.key)]
        if given:
            raise ConfigError(f"--set {given[-1]} (over {path})", e.key, e.value,
                              e.allowed) from None
        raise


def _same_key(override: str, key: str) -> bool:
    """Whether an override's dotted key is the key an error names (or a part of it)."""
    o, k = override.strip(), str(key)
    return o == k or k.startswith(o + ".") or o.startswith(k + ".")
