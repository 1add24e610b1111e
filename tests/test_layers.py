"""The package's layers: no module imports from a layer above its own (imports inside functions
count too), and importing the supernet pulls in neither Ray, Optuna nor torchvision."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import raydnas

ROOT = Path(raydnas.__file__).parent

#: bottom to top; a module may import its own layer and the ones below. A name ending in ``.*``
#: is a whole package.
LAYERS = [
    ("foundations", ["errors", "registry", "allocator", "layout", "weighting", "tblog", "checkpoint",
                     "costs"]),
    ("ops", ["ops"]),
    ("spaces", ["spaces", "genotype"]),
    ("data", ["images", "data", "config_sections"]),
    ("axes", ["axes.*"]),
    ("model", ["fusion", "macro", "supernet", "network", "metrics", "hessian", "measure",
               "cells"]),
    ("config", ["overrides", "config"]),
    ("search", ["search_state", "stop_rules", "selection", "search_epoch", "search"]),
    ("tune glue", ["tune_util"]),
    ("reduce", ["reduce.*"]),
    ("evaluation", ["evaluation.*"]),
    ("sweep", ["sweep.*"]),
    ("entry points", ["cli_common", "cluster_wait", "cli", "evaluate_cli", "reduce_cli",
                      "sweep_cli", "__main__", ""]),
]


def _layer(module: str) -> int:
    for i, (_, names) in enumerate(LAYERS):
        for n in names:
            if module == n or (n.endswith(".*") and (module == n[:-2]
                                                     or module.startswith(n[:-1]))):
                return i
    raise AssertionError(f"raydnas.{module} is in no layer: add it to LAYERS")


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """raydnas modules imported anywhere in ``path`` (relative to the package)."""
    pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    pkg = [p for p in pkg if p]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("raydnas"):
                target = node.module.removeprefix("raydnas").lstrip(".")
            else:
                continue
            subs = [f"{target}.{a.name}".lstrip(".") for a in node.names]
            hits = [s for s in subs if s in known]
            found.update(hits)
            if len(hits) < len(subs):
                found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("raydnas").lstrip(".") for a in node.names
                         if a.name.split(".")[0] == "raydnas")
    return found - {module}


def test_every_module_is_in_a_layer_and_imports_only_downwards():
    mods = _modules()
    upward = []
    for m, path in sorted(mods.items()):
        mine = _layer(m)
        for dep in sorted(_imports(m, path, set(mods))):
            if _layer(dep) > mine:
                upward.append(f"raydnas.{m} ({LAYERS[mine][0]}) imports raydnas.{dep} "
                              f"({LAYERS[_layer(dep)][0]})")
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    """The scan resolves relative imports: an axis importing the supernet is caught."""
    p = tmp_path / "x.py"
    p.write_text("def f():\n    from ..supernet import Supernet\n")
    assert "supernet" in _imports("axes.x", p, set(_modules()))
    assert _layer("supernet") > _layer("axes.x")


def test_importing_the_supernet_and_the_search_loads_no_ray_optuna_or_torchvision():
    code = ("import sys, raydnas.supernet, raydnas.search, raydnas.axes, raydnas.config; "
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'optuna', "
            "'torchvision'}); print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
