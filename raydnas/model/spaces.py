"""Search spaces as data: load and validate ``search_spaces/*.yaml``.

A space names its candidate ops (from :data:`raydnas.model.ops.OPS`), its cell wiring (input nodes,
intermediate nodes, how the cell output is formed), its discretization rule and its macro
skeleton. Users add a space by writing a YAML file; see ``search_spaces/darts.yaml``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, one_of
from .ops import OPS

SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"  # the repository root

RULES = ("top_k_edges", "argmax_per_edge", "all_edges")
MACROS = ("darts", "nb201")
OUTPUTS = ("concat", "last")
FORMATS = ("darts", "nb201")


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space. ``edges`` lists (source, node) pairs in α row order."""

    name: str
    ops: tuple[str, ...]
    inputs: int
    nodes: int
    output: str
    rule: str
    k: int
    exclude: tuple[str, ...]
    genotype_format: str
    macro: str
    cells: int
    channels: int
    stem_multiplier: int
    stages: int
    pool_bn: bool
    source: str = ""

    @property
    def edges(self) -> list[tuple[int, int]]:
        return [(i, self.inputs + j) for j in range(self.nodes) for i in range(self.inputs + j)]

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def cell_types(self) -> tuple[str, ...]:
        return ("normal", "reduce") if self.macro == "darts" else ("normal",)

    def without_ops(self, names: tuple[str, ...]) -> "SearchSpace":
        """The same space with some ops removed (CRB drops ``none``)."""
        ops = tuple(o for o in self.ops if o not in names)
        return dataclasses.replace(self, ops=ops)


_ALLOWED = {
    "": {"name", "description", "ops", "cell", "discretize", "genotype_format", "macro"},
    "cell": {"inputs", "nodes", "output"},
    "discretize": {"rule", "k", "exclude"},
    "macro": {"type", "cells", "channels", "stem_multiplier", "stages", "pool_bn"},
}


def list_spaces() -> list[str]:
    """The names of the built-in spaces."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def resolve_space_path(name_or_path: str) -> Path:
    """A built-in space's YAML path, or the given path for a ``.yaml`` file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        return p
    return SPACES_DIR / f"{name_or_path}.yaml"


def load_space(name_or_path: str, *, where: str | None = None, key: str = "space") -> SearchSpace:
    """Load a space by name (``darts``, ``nb201``, ``tiny``) or by YAML path.

    ``where``/``key`` name the config that referenced the space, for the error message.
    """
    path = resolve_space_path(name_or_path)
    if not path.is_file():
        raise ConfigError(where, key, name_or_path,
                          f"no such search space; built-in spaces: {', '.join(list_spaces())}, "
                          "or a path to a .yaml file")
    f = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f, "<yaml>", str(e).splitlines()[0], "valid YAML") from None
    if not isinstance(raw, dict):
        raise ConfigError(f, "<top level>", raw, "a mapping")
    return _parse(raw, f)


def _section(raw: dict, name: str, f: str) -> dict:
    sec = raw.get(name, {})
    if not isinstance(sec, dict):
        raise ConfigError(f, name, sec, "a mapping")
    for k in sec:
        if k not in _ALLOWED[name]:
            raise ConfigError(f, f"{name}.{k}", sec[k],
                              f"unknown key; allowed: {', '.join(sorted(_ALLOWED[name]))}")
    return sec


def _int(sec: dict, name: str, key: str, f: str, default: Any, lo: int) -> int:
    v = sec.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(f, f"{name}.{key}", v, f"an integer >= {lo}")
    return v


def _parse(raw: dict, f: str) -> SearchSpace:
    for k in raw:
        if k not in _ALLOWED[""]:
            raise ConfigError(f, k, raw[k],
                              f"unknown key; allowed: {', '.join(sorted(_ALLOWED['']))}")
    ops = raw.get("ops")
    if not isinstance(ops, list) or not ops:
        raise ConfigError(f, "ops", ops, "a non-empty list of op names")
    for i, o in enumerate(ops):
        if o not in OPS:
            raise ConfigError(f, f"ops[{i}]", o, f"an op name; known ops: {', '.join(OPS.names())}")
    if len(set(ops)) != len(ops):
        raise ConfigError(f, "ops", ops, "each op at most once")
    cell = _section(raw, "cell", f)
    disc = _section(raw, "discretize", f)
    macro = _section(raw, "macro", f)
    inputs = _int(cell, "cell", "inputs", f, 2, 1)
    nodes = _int(cell, "cell", "nodes", f, 4, 1)
    output = one_of(f, "cell.output", cell.get("output", "concat"), OUTPUTS)
    rule = one_of(f, "discretize.rule", disc.get("rule", "top_k_edges"), RULES)
    k = _int(disc, "discretize", "k", f, 2, 1)
    if rule == "top_k_edges" and k > inputs:
        raise ConfigError(f, "discretize.k", k,
                          f"at most cell.inputs = {inputs} (the first node has only that many "
                          "incoming edges)")
    exclude = disc.get("exclude", ["none"] if rule == "top_k_edges" else [])
    if not isinstance(exclude, list) or any(e not in ops for e in exclude):
        raise ConfigError(f, "discretize.exclude", exclude, f"a list of ops of this space {ops}")
    if len(exclude) >= len(ops):
        raise ConfigError(f, "discretize.exclude", exclude, "must leave at least one op")
    mtype = one_of(f, "macro.type", macro.get("type", "darts"), MACROS)
    if mtype == "darts" and inputs != 2:
        raise ConfigError(f, "cell.inputs", inputs, "2 for the darts macro (c_{k-2}, c_{k-1})")
    if mtype == "nb201":
        if inputs != 1:
            raise ConfigError(f, "cell.inputs", inputs, "1 for the nb201 macro")
        if output != "last":
            raise ConfigError(f, "cell.output", output, "'last' for the nb201 macro")
    fmt = one_of(f, "genotype_format", raw.get("genotype_format", mtype), FORMATS)
    if fmt == "nb201" and inputs != 1:
        raise ConfigError(f, "genotype_format", fmt, "nb201 strings need cell.inputs = 1")
    channels = _int(macro, "macro", "channels", f, 16, 2)
    if mtype == "darts" and channels % 2:
        raise ConfigError(f, "macro.channels", channels, "an even number (FactorizedReduce)")
    pool_bn = macro.get("pool_bn", mtype == "darts")
    if not isinstance(pool_bn, bool):
        raise ConfigError(f, "macro.pool_bn", pool_bn, "true or false")
    name = raw.get("name", Path(f).stem)
    return SearchSpace(
        name=str(name), ops=tuple(ops), inputs=inputs, nodes=nodes, output=output, rule=rule,
        k=k, exclude=tuple(exclude), genotype_format=fmt, macro=mtype,
        cells=_int(macro, "macro", "cells", f, 8 if mtype == "darts" else 5, 1),
        channels=channels,
        stem_multiplier=_int(macro, "macro", "stem_multiplier", f, 3, 1),
        stages=_int(macro, "macro", "stages", f, 3, 1),
        pool_bn=pool_bn, source=f,
    )
