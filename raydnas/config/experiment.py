"""Experiment configs: YAML → typed, validated objects.

Every problem becomes one :class:`~raydnas.errors.ConfigError` line naming the file, the key
path, the value and what is allowed, before anything starts. Unknown keys are errors.

Layout of an experiment YAML (all keys optional but ``space``)::

    space: tiny                  # a built-in space name or a path to a space YAML
    epochs: 10
    seed: 0
    threads: null                # torch CPU threads (null: what a sweep trial of it uses)
    data: {dataset: digits, val_fraction: 0.5, batch_size: 64}
    model: {channels: 8, cells: 3}   # override the space's macro defaults
    activation: softmax          # or {name: softmax, ...hyperparameters}
    gradient: first_order
    schedule: every
    regularizer: none            # e.g. {name: admm, rho: 0.1}
    optim: {w_lr: 0.025, ...}
    log: {tensorboard: true, print_every: 20}
    measure: {bn_images: null, samples: 4, tune_epochs: 1}   # raydnas.search.measure
    speed: {fuse: false}         # never changes results (raydnas.model.fusion)
    sweep: {...}                 # used by `raydnas sweep` (see raydnas.sweep)
    optuna: {...}
    evaluate: {...}              # the sweep's evaluation stage (raydnas.sweep.study)
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..axes import AXIS_NAMES, DEFAULT_METHOD
from ..axes.compat import incompatibility
from ..data.datasets import DATASETS
from ..errors import ConfigError, one_of, require_int
from ..model.spaces import load_space
from .axis_blocks import axis_block, create_axis  # noqa: F401  (create_axis: re-exported)
from .cross_checks import check_data_search, check_model, check_objective, check_sizes
from .overrides import apply_overrides, merge, parse_override, set_key  # noqa: F401
from .sections import (  # noqa: F401  (re-exported)
    DEFAULT_BN_IMAGES,
    AxisConfig,
    DataConfig,
    LogConfig,
    MeasureConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    SelectConfig,
    SpeedConfig,
    StopConfig,
    build_section,
)


@dataclass
class ExperimentConfig:
    """A validated experiment. The four axis blocks are in ``axes`` (axis name → AxisConfig)
    and read as attributes too (``cfg.activation.name``)."""

    space: str
    epochs: int = 10
    seed: int = 0
    #: torch CPU threads; part of the run (float sums over threads differ with the count).
    #: None: :meth:`default_threads`, the count a sweep trial of this config runs with
    threads: int | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    log: LogConfig = field(default_factory=LogConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data_search: Any = None  # raydnas.model.data_mix.DataSearch: the data axis, or None
    axes: dict[str, AxisConfig] = field(
        default_factory=lambda: {a: AxisConfig(n) for a, n in DEFAULT_METHOD.items()})
    sweep: dict[str, Any] | None = None
    optuna: dict[str, Any] | None = None
    evaluate: dict[str, Any] | None = None
    source: str = "<config>"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def __getattr__(self, name: str) -> AxisConfig:
        if name in AXIS_NAMES:
            return self.__dict__["axes"][name]
        raise AttributeError(name)

    def method(self) -> dict[str, str]:
        """Axis name → choice name."""
        return {a: c.name for a, c in self.axes.items()}

    def default_threads(self) -> int:
        """The threads a sweep trial of this config gets (its ``sweep.resources.cpu``, whole
        CPUs, at least 1; 1 without a sweep block): ``threads: null`` runs with these, so that
        ``raydnas search`` of a trial's config reproduces the trial."""
        return threads_for_cpus(((self.sweep or {}).get("resources") or {}).get("cpu", 1))

    def resolved_threads(self) -> int:
        """``threads``, or :meth:`default_threads` when it is null."""
        return self.threads if self.threads is not None else self.default_threads()

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (the form ``from_dict`` and YAML accept)."""
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("source", "raw"):
                continue
            v = getattr(self, f.name)
            if f.name == "axes":
                d.update({a: {"name": c.name, **copy.deepcopy(c.params)} for a, c in v.items()})
                continue
            if dataclasses.is_dataclass(v):
                v = dataclasses.asdict(v)
            if v is not None:
                d[f.name] = copy.deepcopy(v)
        return d


def threads_for_cpus(cpu: Any) -> int:
    """torch threads of a trial holding ``cpu`` CPUs: the whole ones, at least 1."""
    try:
        return max(1, int(cpu))
    except (TypeError, ValueError):
        return 1


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "log": LogConfig,
             "measure": MeasureConfig, "speed": SpeedConfig, "stop": StopConfig,
             "select": SelectConfig, "objective": ObjectiveConfig}
_TOP = {"space", "epochs", "seed", "threads", "name", "description", *_SECTIONS, *AXIS_NAMES,
        "sweep", "optuna", "evaluate", "data_search"}


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
    space = raw["space"]
    if not isinstance(space, str):
        raise ConfigError(f, "space", space, "a search space name or YAML path")
    if not Path(space).is_absolute() and space.endswith((".yaml", ".yml")) and f != "<config>" \
            and not Path(space).exists() and (Path(f).parent / space).exists():
        space = str(Path(f).parent / space)
    load_space(space, where=f, key="space")
    epochs = require_int(f, "epochs", raw.get("epochs", 10), 1)
    seed = require_int(f, "seed", raw.get("seed", 0), 0)
    threads = raw.get("threads")
    if threads is not None:
        require_int(f, "threads", threads, 1,
                    "an integer >= 1, or null (the count a sweep trial of it uses)")
    sections = {k: build_section(cls, raw.get(k), k, f) for k, cls in _SECTIONS.items()}
    data = sections["data"]
    one_of(f, "data.dataset", data.dataset, DATASETS)
    if data.dataset != "digits":
        if not data.root:
            raise ConfigError(f, "data.root", data.root,
                              f"a directory: dataset {data.dataset!r} needs data.root")
        if not data.download and not Path(data.root).exists():
            raise ConfigError(f, "data.root", data.root,
                              "an existing directory (or set data.download: true)")
    check_model(f, sections, load_space(space))
    if sections["stop"].hessian_factor is not None and not sections["measure"].hessian_every:
        raise ConfigError(f, "stop.hessian_factor", sections["stop"].hessian_factor,
                          "null, or set measure.hessian_every > 0: the rule reads the Hessian "
                          "eigenvalue")
    checked = {a: axis_block(raw[a] if raw.get(a) is not None else DEFAULT_METHOD[a], a, f)
               for a in AXIS_NAMES}
    axes = {a: c for a, (c, _) in checked.items()}
    parts = {a: instance for a, (_, instance) in checked.items()}
    why = incompatibility(parts, {a: c.params for a, c in axes.items()})
    if why:
        raise ConfigError(f, "method", {a: c.name for a, c in axes.items()}, why)
    check_objective(f, sections, axes["gradient"].name, parts)
    data_search = check_data_search(f, raw.get("data_search"), sections, parts)
    if parts["activation"].alpha_free:  # what reads α or its cell has nothing to read (RSPS)
        st, md = sections["stop"], sections["model"]
        for key, v in (("measure.hessian_every", sections["measure"].hessian_every),
                       ("stop.margin_stall_epochs", st.margin_stall_epochs),
                       ("stop.dead", st.dead), ("stop.collapsed", st.collapsed),
                       ("model.edge_norm", md.edge_norm), ("model.aux_skip_beta",
                                                           md.aux_skip_beta)):
            if v:
                raise ConfigError(f, key, v, f"off (0, false or null): activation "
                                  f"{axes['activation'].name!r} uses no α, so α, its cell and "
                                  "its edge weights mean nothing (the cell is the random_ws "
                                  "selection's; only sampled ops run)")
        if sections["select"].name != "random_ws":
            raise ConfigError(f, "select.name", sections["select"].name,
                              f"random_ws: activation {axes['activation'].name!r} trains no α, "
                              "so a cell read off α would be its random initial value")
    for a, part in parts.items():  # a choice may ask for its own split
        want = part.requested_val_fraction
        if want is None:
            continue
        given = (raw.get("data") or {}).get("val_fraction")
        if given is not None and abs(given - want) > 1e-9:
            raise ConfigError(f, "data.val_fraction", given,
                              f"{want:.6g} or unset: {a} {axes[a].name!r} asks for that split")
        data.val_fraction = want
    for block in ("sweep", "optuna", "evaluate"):
        if block in raw and not isinstance(raw[block], dict):
            raise ConfigError(f, block, raw[block], "a mapping")
    cfg = ExperimentConfig(space=space, epochs=epochs, seed=seed, threads=threads, **sections,
                           axes=axes, data_search=data_search,
                           sweep=raw.get("sweep"), optuna=raw.get("optuna"),
                           evaluate=raw.get("evaluate"), source=f,
                           raw=copy.deepcopy(raw))
    check_sizes(cfg)
    return cfg


def read_yaml(path: str | Path) -> dict:
    """The parsed YAML file (an empty file is ``{}``); a missing or broken file is one line."""
    p = Path(path).expanduser()  # '~/…' as typed in a quoted ray job entrypoint
    if not p.is_file():
        raise ConfigError(str(path), "<file>", str(path), "an existing YAML file")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError.plain(str(path), f"not valid YAML at {where}: {problem} (a value "
                                "with ': ' in it needs quotes; nested mappings need "
                                "indentation or {braces})") from None
    if raw is None:
        raw = {}
    return raw


def load_config(path: str | Path, overrides: list[str] | dict[str, Any] | None = None
                ) -> ExperimentConfig:
    """Read, override and validate an experiment YAML.

    ``overrides``: the CLI's ``--set`` words (``["epochs=2", "regularizer.rho=0.1"]``) or a
    mapping of dotted keys to values (``{"epochs": 2, "regularizer.rho": 0.1}``).

    Example::

        cfg = load_config("configs/quickstart.yaml", {"epochs": 2})
        metrics = run_search(cfg, "runs/q2")
    """
    raw = read_yaml(path)
    if isinstance(overrides, dict):
        items = [(str(k), v) for k, v in overrides.items()]
        blame = {k: f"overrides[{k!r}] = {v!r}" for k, v in items}
    elif overrides is None or isinstance(overrides, (list, tuple)):
        items = [parse_override(o) for o in overrides or ()]
        blame = {k: f"--set {o}" for (k, _), o in zip(items, overrides or ())}
    else:
        raise ConfigError(str(path), "overrides", overrides,
                          "a list of KEY.PATH=VALUE strings or a mapping {key.path: value}")
    if items:
        if not isinstance(raw, dict):
            raise ConfigError(str(path), "<top level>", raw, "a mapping of config keys")
        raw = copy.deepcopy(raw)
        for k, v in items:
            set_key(raw, k, v, "overrides" if isinstance(overrides, dict) else "--set")
    try:
        return from_dict(raw, str(path))
    except ConfigError as e:  # blame a bad override on the override, not on the file
        given = [k for k in blame if _same_key(k, e.key)]
        if given:
            raise ConfigError(f"{blame[given[-1]]} (over {path})", e.key, e.value,
                              e.allowed) from None
        raise


def revalidate(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` checked again (attributes may have been set by hand since it was loaded:
    ``cfg.epochs = "ten"`` is one line here, not a traceback mid-search)."""
    if not isinstance(cfg, ExperimentConfig):
        raise ConfigError("<config>", "config", type(cfg).__name__,
                          "an ExperimentConfig (raydnas.load_config(path)) or a YAML path")
    return from_dict(cfg.to_dict(), cfg.source)


def _same_key(override: str, key: str) -> bool:
    """Whether an override's dotted key is the key an error names (or a part of it)."""
    o, k = override.strip(), str(key)
    return o == k or k.startswith(o + ".") or o.startswith(k + ".")
