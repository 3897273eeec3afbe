"""Problem families. Each constructor returns a [`gdflow.Problem`][]."""

from ._conv import conv_apply as conv_apply, conv_net as conv_net
from ._glm import (
    least_squares as least_squares,
    logistic as logistic,
    one_hot as one_hot,
    random_least_squares as random_least_squares,
    softmax as softmax,
)
from ._mlp import mlp as mlp, mlp_apply as mlp_apply
from ._quadratic import quadratic as quadratic, two_points as two_points
from ._tomography import (
    Tomography as Tomography,
    parallel_beam_matrix as parallel_beam_matrix,
    shepp_logan as shepp_logan,
    tomography as tomography,
)
