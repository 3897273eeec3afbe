"""gdflow: gradient descent, minibatch SGD and gradient flow, side by side.

Simulate discrete optimisers and the continuous flows they discretise, measure the gap,
model it (modified flows, switched minibatch flows, error estimates from the Hessian
spectrum) and exploit it (the splitting optimiser).

gdflow never changes JAX's global configuration. For the texts' numbers enable float64
yourself, before creating arrays:

```python
import jax
jax.config.update("jax_enable_x64", True)
```

(the `gdflow` command and the experiments do this for you).

Areas: runs ([`gdflow.gd`][], [`gdflow.sgd`][], [`gdflow.descent`][], [`gdflow.gradient_flow`][], with the
stiff-flow solver [`gdflow.RKC2`][]); modified flows ([`gdflow.modified_loss`][],
[`gdflow.modified_field`][], [`gdflow.sgd_modified_loss`][]); the gap ([`gdflow.distance`][],
[`gdflow.hessian_eigs`][], [`gdflow.spectrum_along`][], [`gdflow.error_estimate`][]); splitting and
switched flows ([`gdflow.split`][], [`gdflow.switched_flow`][], [`gdflow.two_point_flow`][]).
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError, version as _version

from . import datasets as datasets, problems as problems
from ._batching import (
    AbstractBatching as AbstractBatching,
    FullBatch as FullBatch,
    Replacement as Replacement,
    Reshuffle as Reshuffle,
    RoundRobin as RoundRobin,
)
from ._central import (
    CentralFlowResults as CentralFlowResults,
    central_flow as central_flow,
    sdcp as sdcp,
    third_derivative as third_derivative,
    track_eigs as track_eigs,
)
from ._descent import descent as descent, gd as gd, sgd as sgd
from ._flow import FlowError as FlowError, gradient_flow as gradient_flow
from ._gap import (
    ErrorEstimate as ErrorEstimate,
    distance as distance,
    error_estimate as error_estimate,
)
from ._methods import SGD as SGD, AbstractMethod as AbstractMethod, Optax as Optax
from ._modified import (
    modified_field as modified_field,
    modified_loss as modified_loss,
    sgd_modified_loss as sgd_modified_loss,
)
from ._momentum import momentum_layer as momentum_layer, momentum_start as momentum_start
from ._order import fit_order as fit_order
from ._problem import Problem as Problem
from ._run import (
    RESULTS as RESULTS,
    AbstractProgressMeter as AbstractProgressMeter,
    DivergenceError as DivergenceError,
    DivergenceWarning as DivergenceWarning,
    NoProgressMeter as NoProgressMeter,
    RunInterrupted as RunInterrupted,
    TqdmProgressMeter as TqdmProgressMeter,
    run as run,
)
from ._sde import SDESolution as SDESolution, sgd_sde as sgd_sde
from ._sharpness import (
    SharpnessPath as SharpnessPath,
    sharpness_along as sharpness_along,
    sharpness_gd as sharpness_gd,
)
from ._solvers import EXPRB32 as EXPRB32, RKC2 as RKC2, ROS2CG as ROS2CG
from ._spectrum import (
    HessianEigs as HessianEigs,
    SpectrumPath as SpectrumPath,
    hessian_eigs as hessian_eigs,
    spectrum_along as spectrum_along,
)
from ._stats import (
    AbstractStats as AbstractStats,
    FlowStats as FlowStats,
    RunStats as RunStats,
    SwitchedStats as SwitchedStats,
)
from ._structure import (
    AbstractGLM as AbstractGLM,
    AbstractStructure as AbstractStructure,
    LeastSquares as LeastSquares,
    Logistic as Logistic,
    Quadratic as Quadratic,
    Softmax as Softmax,
    TwoPoints as TwoPoints,
)
from ._sweep import (
    InProcess as InProcess,
    ResultCache as ResultCache,
    SweepError as SweepError,
    SweepFailure as SweepFailure,
    SweepResult as SweepResult,
    connect as connect,
    grid_points as grid_points,
    local_cluster as local_cluster,
    sweep as sweep,
    sweep_executor as sweep_executor,
    task_key as task_key,
)
from ._trajectory import Trajectory as Trajectory
from .splitting import (
    AbstractLocalSolver as AbstractLocalSolver,
    AbstractScheme as AbstractScheme,
    Euler as Euler,
    Exact as Exact,
    LieTrotter as LieTrotter,
    LocalODE as LocalODE,
    Splitting as Splitting,
    Strang as Strang,
    split as split,
    switched_flow as switched_flow,
    two_point_flow as two_point_flow,
    two_point_flow_approx as two_point_flow_approx,
)

# isort: split
# The measurement protocol is written against the public names above: import it last.
from . import protocol as protocol

try:
    __version__ = _version("gdflow")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
