"""The package's layers are its folders: a folder imports only itself and the folders below it
(imports inside functions count too), no modules import each other in a circle, and importing
the supernet pulls in neither Ray, Optuna nor torchvision."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import raydnas

ROOT = Path(raydnas.__file__).parent

#: bottom to top. ``""`` is the package's own files (errors, registry, checkpoint, allocator);
#: its ``__init__`` and ``__main__`` are the entry points, at the top. A folder may import its
#: own modules and the folders listed before it.
LAYERS = ["", "data", "model", "axes", "config", "search", "results", "evaluation", "reduce",
          "sweep", "cli"]
ENTRY = {"", "__main__"}  # raydnas/__init__.py (the lazy facade) and python -m raydnas


def _layer(module: str) -> int:
    if module in ENTRY:
        return len(LAYERS)
    head = module.split(".")[0]
    if "." not in module and (ROOT / f"{module}.py").is_file():
        return 0
    if head not in LAYERS:
        raise AssertionError(f"raydnas.{module} is in no layer: put it in one of the folders "
                             f"{', '.join(LAYERS[1:])} or add its folder to LAYERS")
    return LAYERS.index(head)


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


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, set(mods)) for m, p in mods.items()}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan). A package's
    ``__init__`` that only hands its modules' names on is left out: importing a module of the
    package runs it anyway, so it is no circle of the code's own."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _faces() -> set[str]:
    """Package ``__init__`` modules (their imports of their own package's modules are a face)."""
    return {m for m, p in _modules().items() if p.name == "__init__.py"}


def test_every_folder_imports_only_itself_and_the_folders_below():
    upward = []
    for m, deps in sorted(_graph().items()):
        mine = _layer(m)
        for dep in sorted(deps - {""}):  # the package itself (__version__) is loaded first
            if _layer(dep) > mine:
                upward.append(f"raydnas.{m} imports raydnas.{dep}, a layer above it "
                              f"(layers, bottom to top: {LAYERS})")
    assert not upward, "\n".join(upward)


def test_no_modules_import_each_other_in_a_circle():
    faces = _faces()
    graph = {m: {d for d in deps if not (m in faces and d.startswith(m + "."))}
             for m, deps in _graph().items()}
    assert _circles(graph) == []


def test_the_checks_see_an_upward_import_and_a_circle(tmp_path):
    """The scan resolves relative imports: an axis importing the supernet is caught; a circle
    of two modules is found."""
    p = tmp_path / "x.py"
    p.write_text("def f():\n    from ..model.supernet import Supernet\n")
    assert "model.supernet" in _imports("search.x", p, set(_modules()))
    assert "model.supernet" in _imports("data.x", p, set(_modules()))
    assert _layer("model.supernet") > _layer("data.x")
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_importing_the_supernet_and_the_search_loads_no_ray_optuna_or_torchvision():
    code = ("import sys, raydnas.model.supernet, raydnas.search.run, raydnas.axes, "
            "raydnas.config.experiment, raydnas.evaluation.train; "
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'optuna', "
            "'torchvision'}); print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_module_is_over_300_lines():
    """Small modules with one concern: a module that grows past 300 lines is split."""
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}


def _function_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import inside a function (relative ones with their dots)."""
    out = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for n in ast.walk(fn):
                if isinstance(n, ast.ImportFrom):
                    out.append((n.lineno, "." * n.level + (n.module or "")))
                elif isinstance(n, ast.Import):
                    out.extend((n.lineno, a.name) for a in n.names)
    return out


def test_imports_are_at_the_top_unless_the_module_says_why_it_waits():
    """An import inside a function is deliberate: the module says why once (a
    ``# Lazy imports:`` comment), it is not of the standard library (always cheap) and not a
    module the file already imports at the top."""
    bad = []
    for m, p in sorted(_modules().items()):
        text = p.read_text()
        tree = ast.parse(text)
        inner = _function_imports(tree)
        if not inner:
            continue
        top = set()
        for n in tree.body:
            if isinstance(n, ast.ImportFrom):
                top.add("." * n.level + (n.module or ""))
            elif isinstance(n, ast.Import):
                top.update(a.name for a in n.names)
        if "\n# Lazy imports:" not in text:
            bad.append(f"raydnas.{m}: imports inside functions (line {inner[0][0]}) and no "
                       "'# Lazy imports:' comment saying why")
        for line, mod in inner:
            if mod.split(".")[0] in sys.stdlib_module_names:
                bad.append(f"raydnas.{m}:{line}: the standard library's {mod} belongs at the top")
            elif mod in top:
                bad.append(f"raydnas.{m}:{line}: {mod} is imported at the top already")
    assert not bad, "\n".join(bad)
