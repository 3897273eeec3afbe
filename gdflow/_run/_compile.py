"""Compile time kept apart from run time."""

from __future__ import annotations

import time

import jax

__all__ = ["compile_timed", "run_compiled"]


def compile_timed(fn, *args):
    """Lower and compile the (`eqx.filter_jit`-wrapped) `fn` for `args`.

    Returns the compiled callable and the seconds compilation took. The compiled object is
    called with the same `args` structure; reuse it to run many times without retracing.
    """
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def run_compiled(fn, *args):
    """Compile `fn` for `args` (timed), run it once (timed).

    Returns `(output, compile_seconds, run_seconds)`; the run time waits for the result
    (`jax.block_until_ready`), so it is the computation's, not the dispatch's.
    """
    compiled, compile_s = compile_timed(fn, *args)
    t1 = time.perf_counter()
    out = compiled(*args)
    jax.block_until_ready(out)
    return out, compile_s, time.perf_counter() - t1
