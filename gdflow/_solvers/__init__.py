"""ODE solvers for stiff gradient flows, as diffrax solvers: [`gdflow.RKC2`][]
(explicit Runge–Kutta–Chebyshev, `_rkc.py`) and [`gdflow.ROS2CG`][] (a matrix-free
Rosenbrock-W method with conjugate-gradient solves on Hessian-vector products, `_ros2.py`).
"""

from ._rkc import RKC2 as RKC2
from ._ros2 import ROS2CG as ROS2CG
