"""``raydnas sweep``: a study (methods × seeds, optionally Optuna points) as one Ray Tune
experiment.

Importing this package is cheap (no Ray): ``validate_study`` only parses the study config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .methods import Method
from .optuna_spec import OptunaSpec, Param
from .study import Study, parse_study

# Lazy imports: Ray loads only when a study runs: parse_study and validate_study work without it.

if TYPE_CHECKING:
    from ..config.experiment import ExperimentConfig
    from .summary import SweepSummary


def validate_study(cfg: "ExperimentConfig", **kw: Any) -> Study:
    """Check ``cfg``'s ``sweep``/``optuna`` blocks; raises one ``ConfigError`` line if bad."""
    return parse_study(cfg, **kw)


def run_sweep(*args: Any, **kw: Any) -> "SweepSummary":
    """Run a study config as one Ray Tune experiment (:func:`raydnas.sweep.runner.run_sweep`)."""
    from .runner import run_sweep as _run

    return _run(*args, **kw)


__all__ = ["Method", "OptunaSpec", "Param", "Study", "parse_study", "run_sweep", "validate_study"]
