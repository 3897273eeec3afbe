"""Problem families. Each constructor returns a :class:`gdflow.Problem`."""

from ._glm import (
    least_squares as least_squares,
    logistic as logistic,
    one_hot as one_hot,
    random_least_squares as random_least_squares,
    softmax as softmax,
)
from ._mlp import mlp as mlp, mlp_apply as mlp_apply
from ._quadratic import quadratic as quadratic, two_points as two_points
