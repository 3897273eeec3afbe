r"""Splitting optimisers and switched minibatch flows.

Minibatch SGD over a fixed batch order is Lie–Trotter splitting of gradient flow, with
each batch's local flow $\dot\theta = -\nabla L_j(\theta)$ solved by one Euler
step. Solving the local flows exactly gives the switched flow; the two-point case is the
minibatch text's closed form. References: `../shared/sources/sgd-as-ode-splitting.md`,
`../shared/sources/minibatch-gradient-flow.md`.

Layout: schemes (`_schemes.py`), local solvers (`_euler.py`, `_exact.py`,
`_local_ode.py` over `_base.py`), the method the engine runs (`_method.py`), the
public entry point (`_split.py`), switched flows (`_switched.py`) and the two-point
closed form (`_two_point.py`).
"""

from ._base import AbstractLocalSolver as AbstractLocalSolver
from ._euler import Euler as Euler
from ._exact import Exact as Exact
from ._local_ode import LocalODE as LocalODE
from ._method import Splitting as Splitting
from ._schemes import (
    AbstractScheme as AbstractScheme,
    LieTrotter as LieTrotter,
    Strang as Strang,
)
from ._split import split as split
from ._switched import switched_flow as switched_flow
from ._two_point import (
    square_wave as square_wave,
    two_point_flow as two_point_flow,
    two_point_flow_approx as two_point_flow_approx,
)
