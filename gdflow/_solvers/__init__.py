"""ODE solvers for stiff gradient flows, as diffrax solvers: [`gdflow.RKC2`][]
(explicit Runge–Kutta–Chebyshev, `_rkc.py`), [`gdflow.ROS2CG`][] (a matrix-free
Rosenbrock-W method with conjugate-gradient solves on Hessian-vector products, `_ros2.py`)
and [`gdflow.EXPRB32`][] (a matrix-free exponential Rosenbrock method with Lanczos
phi-function products on Hessian-vector products, `_exprb.py`).
"""

from ._exprb import EXPRB32 as EXPRB32
from ._rkc import RKC2 as RKC2
from ._ros2 import ROS2CG as ROS2CG
