r"""Splitting optimisers and switched minibatch flows.

Minibatch SGD over a fixed batch order is Lie–Trotter splitting of gradient flow, with
each batch's local flow :math:`\dot\theta = -\nabla L_j(\theta)` solved by one Euler
step. Solving the local flows exactly gives the switched flow; the two-point case is the
minibatch text's closed form. References: ``../shared/sources/sgd-as-ode-splitting.md``,
``../shared/sources/minibatch-gradient-flow.md``.
"""

from ._base import AbstractLocalSolver as AbstractLocalSolver
from ._euler import Euler as Euler
from ._exact import Exact as Exact
from ._local_ode import LocalODE as LocalODE
from ._split import split as split
from ._switched import switched_flow as switched_flow
from ._two_point import (
    square_wave as square_wave,
    two_point_flow as two_point_flow,
    two_point_flow_approx as two_point_flow_approx,
)
