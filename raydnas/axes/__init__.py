"""The four method axes, one registry each: activation, gradient, schedule, regularizer.

Importing this package registers every built-in choice.
"""

from .activation import ACTIVATIONS, Activation
from .gradient import GRADIENTS, ArchGradient
from .regularizer import REGULARIZERS, Regularizer
from .schedule import SCHEDULES, Schedule

AXES = {
    "activation": ACTIVATIONS,
    "gradient": GRADIENTS,
    "schedule": SCHEDULES,
    "regularizer": REGULARIZERS,
}

__all__ = ["AXES", "ACTIVATIONS", "GRADIENTS", "SCHEDULES", "REGULARIZERS", "Activation",
           "ArchGradient", "Schedule", "Regularizer"]
