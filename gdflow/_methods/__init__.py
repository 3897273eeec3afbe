"""Discrete methods as objects: the engine calls `init` once and `step` repeatedly."""

from ._base import AbstractMethod as AbstractMethod
from ._optax import Optax as Optax
from ._sgd import SGD as SGD
