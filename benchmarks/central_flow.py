"""The central flow on the published code's own example, side by side with its curves.

MLP 8-16-16-1, swish, 128 points (x ~ N(0, I_8), y ~ N(0, 1)), loss mean (f - y)^2,
lr 0.1, 1000 GD steps; data and initial weights from `central_flow_toy.npz` (float32,
as the published code ran; gdflow's float32 GD reproduces its `gd_loss` bit for bit,
checked below). The target (issue 12): the central flow's prediction L + ½<H, Σ> of
GD's Gaussian-smoothed (σ = 50 steps) loss within 1.5% mean and 4.4% max relative error
over steps 100-900, at <= 0.3x the published code's 600-850 gradient-equivalents per GD
step (HVP = 2 gradients, third-derivative product = 3, also timed here).

Run: .venv/bin/python benchmarks/central_flow.py [float32|float64]
"""

import platform
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy.ndimage import gaussian_filter1d  # noqa: E402

import gdflow as gf  # noqa: E402
from gdflow._central import _d3, _hvp, central_flow  # noqa: E402
from gdflow._sharpness import sharpness_along, sharpness_gd  # noqa: E402

NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "central_flow_toy.npz"
if not NPZ.exists():
    NPZ = Path("/work/shared/data/central_flow_toy.npz")


def loss(p, batch):
    x, y = batch
    h = jax.nn.swish(x @ p["W0"] + p["b0"])
    h = jax.nn.swish(h @ p["W1"] + p["b1"])
    return jnp.mean(((h @ p["W2"] + p["b2"])[:, 0] - y) ** 2)


def rel_err(pred, ref, sl=slice(100, 901)):
    e = np.abs(pred[sl] / ref[sl] - 1)
    return float(e.mean()), float(e.max())


def time_products(problem):
    """Seconds per gradient, HVP and third-derivative product (compiled, median of 50)."""
    x, unravel = jax.flatten_util.ravel_pytree(problem.params0)
    data = problem.data

    def f(y, d):
        return loss(unravel(y), d)

    u = jnp.ones_like(x) / jnp.sqrt(x.size)
    fns = {
        "gradient": jax.jit(lambda y, d: jax.grad(f)(y, d)),
        "hvp": jax.jit(lambda y, d: _hvp(lambda z: f(z, d), y, u)),
        "third": jax.jit(lambda y, d: _d3(lambda z: f(z, d), y, u, u)),
    }
    out = {}
    for name, fn in fns.items():
        fn(x, data).block_until_ready()
        ts = []
        for _ in range(50):
            t0 = time.perf_counter()
            fn(x, data).block_until_ready()
            ts.append(time.perf_counter() - t0)
        out[name] = float(np.median(ts))
    return out


def main():
    prec = sys.argv[1] if len(sys.argv) > 1 else "float32"
    dtype = {"float32": jnp.float32, "float64": jnp.float64}[prec]
    d = np.load(NPZ)
    params0 = {k: jnp.asarray(d[k], dtype) for k in ("W0", "b0", "W1", "b1", "W2", "b2")}
    problem = gf.Problem(loss, (jnp.asarray(d["x"], dtype), jnp.asarray(d["y"], dtype)), params0)
    lr, K = 0.1, 1000
    t1 = (K - 1) * lr
    print(f"machine: {platform.machine()}, jax {jax.__version__}, {jax.devices()}, {prec}")

    gd = gf.gd(problem, lr, K - 1)
    gd_loss = np.asarray(gd.loss, np.float64)
    same = float(np.max(np.abs(gd_loss / d["gd_loss"] - 1)))
    print(f"gdflow GD vs the npz gd_loss: max relative difference {same:.2e} over 1000 steps")
    smooth = gaussian_filter1d(d["gd_loss"], 50)

    costs = time_products(problem)
    d3_cost = costs["third"] / costs["gradient"]
    hvp_cost = costs["hvp"] / costs["gradient"]
    print(
        f"measured cost: HVP {hvp_cost:.2f} gradients, third-derivative product {d3_cost:.2f} "
        f"gradients (gradient {1e6 * costs['gradient']:.0f} us)"
    )

    runs = {}
    configs = {
        "CF Euler dt=lr/4 (published scheme)": dict(method="euler", dt=lr / 4),
        "CF RK4 dt=lr": dict(method="rk4", dt=lr),
        "CF RK4 dt=lr/2": dict(method="rk4", dt=lr / 2),
    }
    for name, kw in configs.items():
        t0 = time.perf_counter()
        cf = central_flow(problem, lr, t1, k=2, guard=1, **kw)
        wall = time.perf_counter() - t0
        runs[name] = (cf, wall)

    # Sharpness of GD every 10 steps (one compiled loop, warm-started) and along GF.
    sg = sharpness_gd(problem, lr, 990, every=10, k=1, guard=1, tol=1e-5)
    gfl = gf.gradient_flow(problem, t1, ts=lr * np.arange(0, K, 10), rtol=1e-6, atol=1e-9)
    sf = sharpness_along(problem, gfl, lr=lr, k=1, guard=1, tol=1e-5)
    gf_loss_own = np.asarray(gfl.loss)

    # The alternative: gf.gd in segments of 10 steps, gf.hessian_eigs warm-started from
    # the previous vector between them (host-driven Lanczos).
    t0 = time.perf_counter()
    p, prev, seg_hvps, seg_lam = params0, None, 0, []
    for _ in range(100):
        e = gf.hessian_eigs(loss, p, 1, "largest", args=(problem.data,), v0=prev, tol=1e-5)
        seg_hvps += e.hvps
        seg_lam.append(float(e.lambda_max))
        prev = e
        seg = gf.gd(gf.Problem(loss, problem.data, p), lr, 10, save_every=10)
        p = seg.final
    seg_s = time.perf_counter() - t0
    seg_lam = np.asarray(seg_lam)
    print(
        f"sharpness every 10 GD steps, 100 checks: jitted loop (sharpness_gd) {sg.seconds:.2f} s "
        f"run + compile apart, {sg.hvps} HVPs; gf.gd segments + warm gf.hessian_eigs "
        f"{seg_s:.2f} s wall (incl. compiles), {seg_hvps} HVPs; max |difference| before EoS (checks 0-33) of "
        f"lr*lambda {np.max(np.abs(lr * seg_lam[:34] - lr * sg.sharpness[:34])):.1e}"
    )
    print(
        f"\nGD sharpness: lr*lambda_max first reaches 2 at step "
        f"{sg.crossing_time / lr:.1f} (interpolated between checks every 10 steps; "
        f"published curve: step {int(np.argmax(d['gd_sharp'] >= 2))}); "
        f"{sg.hvps} HVPs for {len(sg.ts)} checks, {sg.seconds:.2f} s with GD; "
        f"at step 990 lr*lambda = {lr * sg.sharpness[-1]:.3f} (published at 999: "
        f"{d['gd_sharp'][999]:.3f})"
    )
    print(
        f"GF sharpness: lr*lambda_max at t = {gfl.ts[-1]:.1f}: {lr * sf.sharpness[-1]:.3f} "
        f"(published GF at step 999: {d['gf_sharp'][999]:.3f}); crosses 2 at step "
        f"{sf.crossing_time / lr:.1f}"
    )

    print(
        f"\n{'method':38s} {'mean err':>8s} {'max err':>8s} {'geq/step':>9s} {'x pub600':>8s} "
        f"{'x pub850':>8s} {'d3/step':>8s} {'hvp/step':>8s} {'sdcp it/step':>12s} {'run s':>6s} "
        f"{'wall s':>6s}"
    )
    m, M = rel_err(d["cf_pred"], smooth)
    print(f"{'published code (npz cf_pred)':38s} {100 * m:7.2f}% {100 * M:7.2f}% {'600-850':>9s}")
    for name, (cf, wall) in runs.items():
        r = cf.stats["results"]
        c = r.costs
        steps = t1 / lr
        geq = (c["grads"] + 2 * c["hvps"] + 3 * c["third_derivatives"]) / steps
        m, M = rel_err(r.predicted_loss, smooth)
        print(
            f"{name:38s} {100 * m:7.2f}% {100 * M:7.2f}% {geq:9.1f} {geq / 600:8.3f} "
            f"{geq / 850:8.3f} {c['third_derivatives'] / steps:8.1f} {c['hvps'] / steps:8.1f} "
            f"{c['sdcp_iterations'] / steps:12.1f} {cf.stats['seconds']:6.1f} {wall:6.1f}"
        )
        geq_meas = (c["grads"] + hvp_cost * c["hvps"] + d3_cost * c["third_derivatives"]) / steps
        print(f"{'':38s} (with measured HVP/d3 costs: {geq_meas:.1f} gradient-equivalents/step)")
    m, M = rel_err(d["cf_loss"], smooth)
    print(f"{'published: CF loss alone':38s} {100 * m:7.2f}% {100 * M:7.2f}%")
    m, M = rel_err(d["gf_loss"], smooth)
    print(f"{'published: GF loss':38s} {100 * m:7.2f}% {100 * M:7.2f}%")

    cf_best = runs["CF Euler dt=lr/4 (published scheme)"][0]
    cf_rk = runs["CF RK4 dt=lr"][0]
    r, r4 = cf_best.stats["results"], cf_rk.stats["results"]
    d_cf = np.linalg.norm(gd.flat()[: -0 or None][: len(cf_best.ts)] - cf_best.flat(), axis=1)
    print(
        "\nstep | GD loss | smoothed | pred pub | pred Euler/4 | pred RK4 | lr*lam CF pub | "
        "lr*lam CF | |GD-CF| pub | |GD-CF| | GF loss pub | GF loss"
    )
    for kstep in (0, 100, 200, 300, 341, 400, 422, 500, 600, 700, 800, 900, 999):
        j = min(kstep, len(r.ts) - 1)
        g = min(kstep // 10, len(gf_loss_own) - 1)
        print(
            f"{kstep:4d} | {d['gd_loss'][kstep]:.5f} | {smooth[kstep]:.5f} | "
            f"{d['cf_pred'][kstep]:.5f} | {r.predicted_loss[j]:.5f} | {r4.predicted_loss[j]:.5f} | "
            f"{d['cf_sharp'][kstep]:.4f} | {lr * r.sharpness[j]:.4f} | {d['d_gd_cf'][kstep]:.3f} | "
            f"{d_cf[j]:.3f} | {d['gf_loss'][kstep]:.5f} | {gf_loss_own[g]:.5f}"
        )
    print(f"\nedge intervals (eigenvalue rank, t start, t end), Euler/4: {r.edge_intervals}")
    print(
        f"max |GD - CF| after step 600: {d_cf[600:].max():.3f} (published {d['d_gd_cf'][600:].max():.3f})"
    )


if __name__ == "__main__":
    main()
