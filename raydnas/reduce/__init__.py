"""``raydnas reduce``: a cross-seed discretization reliability report for a sweep.

``raydnas.reduce.reduce(experiment, out_dir=None, sort=..., ...)`` returns a pandas DataFrame
(one row per group: method + Optuna point + hyperparameters) and writes ``report.md``,
``report.csv``, ``report.json`` and PNG plots. The module itself is callable, so
``raydnas.reduce(experiment)`` works too (the subpackage and the function share the name that
the issue asks for; a callable module keeps both spellings valid whatever was imported first).

Modules: ``load`` (experiment dir -> trial records), ``stats`` (the measures and their
definitions), ``core`` (grouping, sorting), ``report`` (md/csv/json), ``plots`` (PNGs).
"""

from __future__ import annotations

import sys
import types
from typing import Any

# Lazy imports: the subpackage is callable and loads its core (pandas, torch) on first use.

__all__ = ["reduce"]


def __getattr__(name: str):
    # lazy, so that the CLI's parser (the thresholds of ``stats``) imports no torch or pandas
    if name == "reduce":
        from .core import reduce

        return reduce
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any):
        from .core import reduce

        return reduce(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
