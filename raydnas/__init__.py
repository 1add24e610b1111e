"""raydnas: studies of DARTS-family architecture search as Ray Tune experiments.

Importing ``raydnas`` is cheap: Ray, Optuna, torchvision and plotting are imported only by the
functions that need them.
"""

from __future__ import annotations

import importlib
import os

# Lazy imports: the facade imports each name on first use, so `import raydnas` loads no torch.

# OpenMP threads that wait for work sleep instead of spinning. torch's OpenMP reads this when
# torch is first imported (so it holds where raydnas is imported before torch: the CLI, Ray
# trials). Spinning threads on a machine with other jobs made a 2-thread search 4-30x slower
# (benchmarks/README.md, "Threads on a busy machine"); set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

__all__ = ["load_config", "load_space", "run_search", "Supernet", "Genotype", "ConfigError",
           "reduce", "__version__"]


def __getattr__(name: str):
    if name == "load_config":
        from .config.experiment import load_config
        return load_config
    if name == "load_space":
        from .model.spaces import load_space
        return load_space
    if name == "run_search":
        from .search.run import run_search
        return run_search
    if name == "Supernet":
        from .model.supernet import Supernet
        return Supernet
    if name == "Genotype":
        from .model.genotype import Genotype
        return Genotype
    if name == "reduce":  # the subpackage; it is callable: raydnas.reduce(experiment, ...)
        return importlib.import_module(".reduce", __name__)
    if name == "ConfigError":
        from .errors import ConfigError
        return ConfigError
    raise AttributeError(f"module 'raydnas' has no attribute {name!r}")
