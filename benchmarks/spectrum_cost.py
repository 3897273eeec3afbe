"""Cost of lambda_min along a gradient-flow path: cold against warm-started Lanczos.

Digits MLP 64-128-128-10 (no bias, tanh, cross-entropy, float64, 25856 weights), GF solved
to t = 20 and saved at 100 evenly spaced points (loss 2.38 -> 0.19). At every point
lambda_min of the Hessian by `gf.spectrum_along(..., which="smallest")`:

- Lanczos, cold: every point from a random vector;
- Lanczos, warm (the default of `spectrum_along`): from the eigenvector extrapolated
  linearly from the two previous points;
- Lanczos, warm without extrapolation: from the previous point's eigenvector;
- ARPACK (`method="eigsh"`), cold and warm, on a 20-point stretch of the path only (it is
  slow). Its `tol` is relative to the eigenvalue itself, stricter near 0 than Lanczos's
  (relative to the spectral radius), so its counts are an upper side.

All at tol = 1e-6. Reported: Hessian-vector products (HVPs) and seconds per point (means
over the points after the first two; the first includes compilation), warm/cold ratios,
and the largest disagreement of lambda_min between warm and cold. Target: warm-started
points cost at most half of cold ones (HVPs and seconds).

Run: .venv/bin/python benchmarks/spectrum_cost.py
"""

import platform

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gdflow as gf  # noqa: E402
import gdflow._spectrum as spectrum  # noqa: E402


def _sweep(problem, traj, warm, **kw):
    path = gf.spectrum_along(
        problem.loss,
        traj,
        args=(problem.data,),
        which="smallest",
        warm_start=warm,
        progress=True,
        tol=1e-6,
        **kw,
    )
    return path


def _row(name, path):
    h, s = path.hvps[2:], path.seconds[2:]
    return name, float(np.mean(h)), float(np.mean(s)), np.asarray(path.lambda_min)


def main():
    X, y = gf.datasets.digits()
    problem = gf.problems.mlp(X, y, widths=(128, 128), activation="tanh", key=jax.random.key(0))
    flow = gf.gradient_flow(problem, 20.0, ts=jnp.linspace(0.0, 20.0, 100))
    print(
        f"GF path: 100 points on [0, 20], loss {float(flow.loss[0]):.3f} -> "
        f"{float(flow.loss[-1]):.3f}, {flow.stats['num_steps']} solver steps"
    )
    rows = {}
    rows["lanczos cold"] = _row("Lanczos, cold", _sweep(problem, flow, False))
    rows["lanczos warm"] = _row("Lanczos, warm (extrapolated)", _sweep(problem, flow, True))

    # Warm start from the previous eigenvector only: switch the extrapolation off.
    saved = spectrum._extrapolate
    spectrum._extrapolate = lambda a, b, ta, tb, t: b
    try:
        rows["lanczos prev"] = _row("Lanczos, warm (previous)", _sweep(problem, flow, True))
    finally:
        spectrum._extrapolate = saved

    stretch = gf.Trajectory(
        ts=flow.ts[40:60],
        params=jax.tree_util.tree_map(lambda x: x[40:60], flow.params),
        loss=flow.loss[40:60],
        method="gradient_flow",
    )
    rows["eigsh cold"] = _row(
        "ARPACK, cold (pts 40-59)", _sweep(problem, stretch, False, method="eigsh")
    )
    rows["eigsh warm"] = _row(
        "ARPACK, warm (pts 40-59)", _sweep(problem, stretch, True, method="eigsh")
    )
    lan_stretch = _row("Lanczos, warm (pts 40-59)", _sweep(problem, stretch, True))

    print(
        f"\nmachine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"jax {jax.__version__}, devices {jax.devices()}"
    )
    cold = rows["lanczos cold"]
    print(f"{'method':32s} {'HVPs/pt':>8s} {'s/pt':>7s} {'HVP ratio':>10s} {'time ratio':>10s}")
    for key in ("lanczos cold", "lanczos warm", "lanczos prev"):
        name, h, s, _ = rows[key]
        print(f"{name:32s} {h:8.1f} {s:7.3f} {h / cold[1]:10.2f} {s / cold[2]:10.2f}")
    ecold = rows["eigsh cold"]
    for name, h, s, _ in (ecold, rows["eigsh warm"], lan_stretch):
        print(f"{name:32s} {h:8.1f} {s:7.3f} {h / ecold[1]:10.2f} {s / ecold[2]:10.2f}")
    lam_c, lam_w = rows["lanczos cold"][3], rows["lanczos warm"][3]
    print(
        f"\nlambda_min: {lam_c[0]:.4f} at t=0 -> {lam_c[-1]:.4f} at t=20; "
        f"max |warm - cold| = {np.max(np.abs(lam_w - lam_c)):.2e}; "
        f"eigsh vs Lanczos on the stretch: "
        f"{np.max(np.abs(rows['eigsh cold'][3] - lam_c[40:60])):.2e}"
    )
    warm = rows["lanczos warm"]
    ok = warm[1] <= 0.5 * cold[1] and warm[2] <= 0.5 * cold[2]
    print(
        "target (warm-started points cost <= 0.5x cold ones, HVPs and seconds): "
        f"{'met' if ok else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
