"""Device readiness: does gdflow compute the same numbers on whatever device JAX finds?

Runs a quick suite on JAX's default device (CPU, GPU or TPU) and prints one table:
device, dtype, a few key numbers against their CPU values (measured on the CPU and
stored below), and per-step throughput of `gf.gd` and `gf.gradient_flow` on the digits
MLP.

Key numbers:
- quadratic: GD (lr, K steps) against GF at t = K lr on L = 1/2 θᵀHθ, H diagonal; the
  gap |θ_GD - θ_GF| is also computed in closed form with NumPy
  ((1 - lr h_i)^K against exp(-h_i t)), an oracle on any device;
- digits MLP (tanh, no bias): full-batch GD loss after N steps, and the GF loss at
  t = N lr (Tsit5, rtol 1e-6).

Exit status 1 if the quadratic gap misses the closed form, or a key number misses its
CPU value, by more than its tolerance (`TOL` below: float64 1e-9 relative for GD, 1e-5
for the adaptive GF solve; float32 1e-3).

Run: .venv/bin/python benchmarks/device_check.py [--tiny] [--float32]
GPU: pip install -U "jax[cuda12]" first (see docs/sweeps.md).
"""

import argparse
import platform
import sys
import time

import jax
import numpy as np

# CPU values measured with this script on the development machine (2-core x86_64 VM,
# JAX 0.10.2 on the CPU), keyed by (size, dtype). Rerun with --print-reference to refresh.
CPU_REFERENCE = {
    ("tiny", "float64"): {
        "quadratic GD-GF gap": 0.021964865195391984,
        "digits MLP GD loss": 1.4523635528972543,
        "digits MLP GF loss": 1.4450668978247654,
    },
    ("default", "float64"): {
        "quadratic GD-GF gap": 0.06481563365962792,
        "digits MLP GD loss": 0.095221279530599,
        "digits MLP GF loss": 0.09522696752934474,
    },
    # float32 draws other initial weights (jax.random in float32), so its losses differ.
    ("tiny", "float32"): {
        "quadratic GD-GF gap": 0.02196485549211502,
        "digits MLP GD loss": 1.2034296989440918,
        "digits MLP GF loss": 1.1989623308181763,
    },
    ("default", "float32"): {
        "quadratic GD-GF gap": 0.06481565535068512,
        "digits MLP GD loss": 0.0946260318160057,
        "digits MLP GF loss": 0.09463424980640411,
    },
}

SIZES = {
    # digits examples, hidden widths, GD steps, lr; quadratic dimension and steps
    "tiny": dict(n=200, widths=(16, 16), steps=50, lr=0.1, quad_dim=8, quad_steps=20),
    "default": dict(n=1797, widths=(128, 128), steps=1000, lr=0.05, quad_dim=64, quad_steps=20),
}
# Relative tolerances per quantity and dtype. GD is a fixed sequence of operations: across
# devices it differs only by rounding (reduction order). GF is adaptive (rtol 1e-6): a
# step accepted on one device and rejected on another moves the result by about rtol.
# The quadratic's GF is solved at rtol 1e-10 (float64) / 1e-6 (float32), and its gap is
# about 1e-2 of |θ|, so the gap carries the solver error times 100.
TOL = {
    "float64": {
        "quadratic GD-GF gap": 1e-6,
        "digits MLP GD loss": 1e-9,
        "digits MLP GF loss": 1e-5,
    },
    "float32": {
        "quadratic GD-GF gap": 1e-2,
        "digits MLP GD loss": 1e-3,
        "digits MLP GF loss": 1e-3,
    },
}


def quadratic_gap(size, dtype):
    import jax.numpy as jnp

    import gdflow as gf

    d, K = size["quad_dim"], size["quad_steps"]
    h = np.linspace(0.1, 1.0, d)  # eigenvalues; lr h_i <= 0.5, so GD is stable
    lr = 0.5
    theta0 = np.linspace(1.0, 2.0, d)
    problem = gf.problems.quadratic(
        jnp.diag(jnp.asarray(h, dtype)), params0=jnp.asarray(theta0, dtype)
    )
    t1 = K * lr
    gd = gf.gd(problem, lr, K, save_every=K)
    rtol = 1e-10 if dtype == "float64" else 1e-6
    flow = gf.gradient_flow(
        problem,
        jnp.asarray(t1, dtype),
        ts=jnp.asarray([0.0, t1], dtype),
        rtol=rtol,
        atol=rtol * 1e-2,
    )
    gap = float(np.linalg.norm(np.asarray(gd.flat()[-1]) - np.asarray(flow.flat()[-1])))
    exact = float(np.linalg.norm((1 - lr * h) ** K * theta0 - np.exp(-h * t1) * theta0))
    return gap, exact


def mlp_runs(size, dtype):
    import jax.numpy as jnp

    import gdflow as gf

    X, y = gf.datasets.digits(limit=size["n"])
    X = jnp.asarray(X, dtype)
    problem = gf.problems.mlp(
        X, y, widths=size["widths"], activation="tanh", key=jax.random.key(0)
    )
    N, lr = size["steps"], size["lr"]
    gd = gf.gd(problem, lr, N, save_every=N)
    t1 = jnp.asarray(N * lr, dtype)
    flow = gf.gradient_flow(
        problem, t1, ts=jnp.asarray([0.0, N * lr], dtype), rtol=1e-6, atol=1e-9
    )
    return gd, flow


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a small size (seconds on a CPU)")
    ap.add_argument("--float32", action="store_true", help="float32 instead of float64")
    ap.add_argument("--print-reference", action="store_true", help="print CPU_REFERENCE lines")
    args = ap.parse_args(argv)
    x64 = not args.float32
    jax.config.update("jax_enable_x64", x64)
    dtype = "float64" if x64 else "float32"
    size_name = "tiny" if args.tiny else "default"
    size = SIZES[size_name]
    dev = jax.devices()[0]

    t0 = time.perf_counter()
    gap, exact = quadratic_gap(size, dtype)
    gd, flow = mlp_runs(size, dtype)
    total = time.perf_counter() - t0
    numbers = {
        "quadratic GD-GF gap": gap,
        "digits MLP GD loss": float(gd.loss[-1]),
        "digits MLP GF loss": float(flow.loss[-1]),
    }
    ref = CPU_REFERENCE.get((size_name, dtype), {})
    tol = TOL[dtype]

    print(
        f"device: {dev.platform} ({dev.device_kind}), {len(jax.devices())} device(s); "
        f"JAX {jax.__version__}; dtype {dtype}; size {size_name}; {platform.machine()}"
    )
    print(
        f"digits MLP {size['n']} examples, 64-{'-'.join(map(str, size['widths']))}-10 tanh; "
        f"GD {size['steps']} steps at lr {size['lr']}; quadratic d={size['quad_dim']}, "
        f"K={size['quad_steps']} at lr 0.5"
    )
    print()
    print("| quantity | this device | CPU reference | rel. diff | ok |")
    print("|---|---|---|---|---|")
    ok_all = True
    rel = abs(gap - exact) / exact
    ok = rel <= tol["quadratic GD-GF gap"]
    ok_all &= ok
    print(
        f"| quadratic gap vs closed form (NumPy) | {gap:.12g} | {exact:.12g} (exact) | {rel:.1e} | {'yes' if ok else 'NO'} |"
    )
    for name, value in numbers.items():
        r = ref.get(name)
        if r is None:
            print(f"| {name} | {value:.12g} | (none stored) | | |")
            continue
        rel = abs(value - r) / abs(r)
        ok = rel <= tol[name]
        ok_all &= ok
        print(f"| {name} | {value:.12g} | {r:.12g} | {rel:.1e} | {'yes' if ok else 'NO'} |")
    print()
    print(
        "| throughput (digits MLP) | steps | grad evals | run s | compile s | steps/s | µs/grad eval |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, tr, steps in (
        ("gf.gd", gd, size["steps"]),
        ("gf.gradient_flow (Tsit5)", flow, int(flow.stats["num_steps"])),
    ):
        s = float(tr.stats["seconds"])
        c = tr.stats.get("compile_seconds")
        ev = int(tr.stats["grad_evals"])
        cs = "" if c is None else f"{float(c):.2f}"
        print(
            f"| {label} | {steps} | {ev} | {s:.3f} | {cs} | {steps / s:.1f} | {1e6 * s / ev:.1f} |"
        )
    print()
    print(
        f"total {total:.1f} s (compilation included); verdict: "
        f"{'all key numbers within tolerance' if ok_all else 'MISMATCH'}"
    )
    if args.print_reference:
        print(f"    ({size_name!r}, {dtype!r}): {{")
        for name, value in numbers.items():
            print(f"        {name!r}: {value!r},")
        print("    },")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
