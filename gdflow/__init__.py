"""gdflow: gradient descent, minibatch SGD and gradient flow, side by side.

Simulate discrete optimisers and the continuous flows they discretise, measure the gap,
model it (modified flows, switched minibatch flows, error estimates from the Hessian
spectrum) and exploit it (the splitting optimiser).

gdflow never changes JAX's global configuration. For the texts' numbers enable float64
yourself, before creating arrays::

    import jax
    jax.config.update("jax_enable_x64", True)

(the ``gdflow`` command and the experiments do this for you).
"""

from importlib.metadata import PackageNotFoundError, version as _version

from . import datasets as datasets, problems as problems
from ._batching import (
    AbstractBatching as AbstractBatching,
    FullBatch as FullBatch,
    Replacement as Replacement,
    Reshuffle as Reshuffle,
    RoundRobin as RoundRobin,
)
from ._descent import (
    DivergenceError as DivergenceError,
    DivergenceWarning as DivergenceWarning,
    descent as descent,
    gd as gd,
    sgd as sgd,
)
from ._flow import FlowError as FlowError, gradient_flow as gradient_flow
from ._order import fit_order as fit_order
from ._problem import Problem as Problem
from ._trajectory import Trajectory as Trajectory

try:
    __version__ = _version("gdflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

# --- further public names by area (each block added by the area's author) ---

# modified flows (issue 3: backward error analysis of GD and SGD)
from ._modified import (
    modified_field as modified_field,
    modified_loss as modified_loss,
    sgd_modified_loss as sgd_modified_loss,
)

# splitting and switched flows (issue 4: splitting optimiser, minibatch flows)
from .splitting import (
    AbstractLocalSolver as AbstractLocalSolver,
    Euler as Euler,
    Exact as Exact,
    LocalODE as LocalODE,
    split as split,
    switched_flow as switched_flow,
    two_point_flow as two_point_flow,
    two_point_flow_approx as two_point_flow_approx,
)
