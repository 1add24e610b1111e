"""The four method axes, one registry each: activation, gradient, schedule, regularizer.

Importing this package registers every built-in choice. The axes own their names
(``AXIS_NAMES``), their default choices (``AXES[axis].default``) and, through properties
declared on each choice, which combinations can run (:mod:`.compat`). The loop's side of the
contract is :mod:`.base`.
"""

from . import (
    dirichlet,  # noqa: F401  (registers dirichlet)
    gumbel,  # noqa: F401  (registers gumbel)
    gumbel_hard,  # noqa: F401  (registers gumbel_hard)
    penalties,  # noqa: F401  (registers resource, beta, zero_one, dirichlet_kl)
    random_path,  # noqa: F401  (registers random_path)
    smoothing,  # noqa: F401  (registers sdarts_rs, sdarts_adv)
)
from .activation import ACTIVATIONS, Activation
from .base import HOOKS, AxisChoice, SearchContext
from .gradient import GRADIENTS, ArchGradient
from .regularizer import REGULARIZERS, Regularizer
from .schedule import SCHEDULES, Schedule

#: axis name → its registry, in the order methods are named (activation/gradient/schedule/reg.)
AXES = {
    "activation": ACTIVATIONS,
    "gradient": GRADIENTS,
    "schedule": SCHEDULES,
    "regularizer": REGULARIZERS,
}
AXIS_NAMES = tuple(AXES)
#: the method a config gets for every axis it leaves out
DEFAULT_METHOD = {a: reg.default for a, reg in AXES.items()}

__all__ = ["AXES", "AXIS_NAMES", "DEFAULT_METHOD", "HOOKS", "ACTIVATIONS", "GRADIENTS",
           "SCHEDULES", "REGULARIZERS", "Activation", "ArchGradient", "AxisChoice",
           "Regularizer", "Schedule", "SearchContext"]
