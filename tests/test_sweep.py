"""gf.sweep: grid order, failures, the result cache, interrupted runs, and a real
two-worker Dask LocalCluster (spawned processes, no mocks)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdflow as gf
from gdflow import (
    InProcess,
    ResultCache,
    SweepError,
    SweepFailure as Failure,
    local_cluster,
    sweep,
    task_key,
)

ROOT = Path(__file__).resolve().parents[1]

# --- task functions (module level: Dask workers import them by reference) -------------


def poly(p):
    return p["a"] * 10 + p["b"]


def inverse(p):
    if p["x"] == 0:
        raise ZeroDivisionError(f"x is zero at {p}")
    return 1.0 / p["x"]


def worker_facts(p):
    """Where and how the task ran: pid, the command line that started the process (a
    spawned child runs multiprocessing's spawn_main), JAX's float64 switch."""
    import jax
    import jax.numpy as jnp

    with open(f"/proc/{os.getpid()}/cmdline", "rb") as fh:
        cmdline = fh.read().replace(b"\0", b" ").decode()
    return {
        "pid": os.getpid(),
        "spawned": "spawn_main" in cmdline,
        "x64": bool(jax.config.jax_enable_x64),
        "dtype": str(jnp.zeros(()).dtype),
    }


def key_of(p):
    return task_key(p["point"], config=p["config"], task="t", version="v")


def descent_run(p):
    """A real small run: GD and round-robin SGD on a seeded random least-squares problem."""
    problem = gf.problems.random_least_squares(60, 8, noise=0.1, key=jax.random.key(p["seed"]))
    if p["method"] == "gd":
        tr = gf.gd(problem, p["lr"], 40, save_every=10)
    else:
        tr = gf.sgd(problem, p["lr"], 5, gf.RoundRobin(10), save_every=6)
    return {"params": np.asarray(tr.params), "loss": np.asarray(tr.loss)}


DESCENT_GRID = {"method": ["gd", "sgd"], "lr": [0.01, 0.05], "seed": [0, 1]}


# --- grids and results ------------------------------------------------------------------


def test_mapping_grid_is_row_major_product():
    res = sweep(poly, {"a": [1, 2, 3], "b": [4, 5]}, progress=False)
    assert res.shape == (3, 2) and res.names == ("a", "b")
    assert [tuple(p.values()) for p in res.points] == [
        (1, 4), (1, 5), (2, 4), (2, 5), (3, 4), (3, 5)
    ]  # fmt: skip
    assert res.values == (14, 15, 24, 25, 34, 35)
    np.testing.assert_array_equal(res.array(), [[14, 15], [24, 25], [34, 35]])
    assert res.failures == () and all(res.ok) and not any(res.cached)


def test_list_grid_keeps_order():
    pts = [{"a": 3, "b": 1}, {"a": 1, "b": 2}, {"a": 2, "b": 0}]
    res = sweep(poly, pts, executor=InProcess(), progress=False)
    assert res.values == (31, 12, 20) and res.shape == (3,) and res.names is None
    assert res.table()[1] == {"a": 1, "b": 2, "value": 12, "error": None}


def test_failures_are_kept_apart():
    res = sweep(inverse, {"x": [2.0, 0.0, 4.0, 0.0]}, progress=False)
    assert res.values == (0.5, None, 0.25, None)
    assert res.ok == (True, False, True, False)
    assert [f.index for f in res.failures] == [1, 3]
    f = res.failures[0]
    assert isinstance(f, Failure) and f.type == "ZeroDivisionError"
    assert f.message == "x is zero at {'x': 0.0}" and f.point == {"x": 0.0}
    assert "in inverse" in f.traceback and "raise ZeroDivisionError" in f.traceback
    assert res.table()[1]["error"].startswith("ZeroDivisionError: x is zero")
    assert np.isnan(res.array()[1])
    with pytest.raises(SweepError, match="2 of 4 points failed"):
        res.unwrap()


def test_progress_bar(capsys):
    sweep(poly, {"a": [1, 2], "b": [0]}, progress=True, desc="grid")
    err = capsys.readouterr().err
    assert "grid" in err and "2/2" in err
    sweep(poly, {"a": [1, 2], "b": [0]}, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(fn=1, grid={"a": [1]}), TypeError, "fn must be"),
        (dict(fn=poly, grid=3), TypeError, "grid must be a mapping"),
        (dict(fn=poly, grid={}), ValueError, "empty mapping"),
        (dict(fn=poly, grid={"a": []}), ValueError, r"grid\['a'\] is empty"),
        (dict(fn=poly, grid={"a": 5}), TypeError, r"wrap a single value"),
        (dict(fn=poly, grid=[{"a": 1}, 2]), TypeError, r"grid\[1\] must be a dict"),
        (dict(fn=poly, grid={"a": [1]}, executor=object()), TypeError, "submit"),
        (
            dict(fn=poly, grid={"a": [1]}, executor=InProcess(), scheduler="tcp://x:1"),
            ValueError,
            "not both",
        ),  # fmt: skip
        (dict(fn=poly, grid={"a": [1]}, cache=3), TypeError, "cache must be"),
        (dict(fn=poly, grid={"a": [1]}, config={"n": 1}), ValueError, "only matters"),
        (dict(fn=poly, grid={"a": [1]}, progress="yes"), TypeError, "progress must be"),
        (dict(fn=poly, grid={"a": [1]}, jax_config=1), TypeError, "jax_config must be"),
    ],
)
def test_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sweep(**kwargs)


# --- the cache ----------------------------------------------------------------------------


def test_cache_round_trips_pytrees_to_the_bit(tmp_path):
    rng = np.random.default_rng(0)
    value = {
        "a": rng.standard_normal((3, 4)),
        "j": jnp.arange(5, dtype=jnp.float32) / 3,
        "t": (1, 2.5, None, "s", [True, np.float64(0.1)]),
        "inf": float("inf"),
        "nan": float("nan"),
        "__tricky__": 1,
        "third": 1 / 3,
    }
    c = ResultCache(tmp_path)
    c.store("k" * 64, value, point={"x": 1})
    got = c.load("k" * 64)
    assert got["a"].tobytes() == value["a"].tobytes() and got["a"].dtype == np.float64
    assert got["j"].dtype == np.float32 and got["j"].tobytes() == np.asarray(value["j"]).tobytes()
    assert got["t"] == (1, 2.5, None, "s", [True, 0.1]) and isinstance(got["t"], tuple)
    assert isinstance(got["t"][4][1], np.float64)
    assert got["inf"] == float("inf") and np.isnan(got["nan"]) and got["__tricky__"] == 1
    assert got["third"] == 1 / 3
    assert not list(tmp_path.glob("*/.tmp-*"))  # the temporary file was moved into place


def test_cache_refuses_unsafe_values_unless_pickle(tmp_path):
    traj = gf.gd(gf.problems.quadratic(jnp.eye(2), params0=jnp.ones(2)), 0.1, 3)
    with pytest.raises(TypeError, match="pickle=True"):
        ResultCache(tmp_path).store("a" * 64, traj)
    ResultCache(tmp_path, pickle=True).store("b" * 64, {"traj": traj})
    back = ResultCache(tmp_path, pickle=True).load("b" * 64)["traj"]
    np.testing.assert_array_equal(back.params, traj.params)
    with pytest.raises(TypeError, match="stored with pickle"):
        ResultCache(tmp_path).load("b" * 64)


def test_keys_depend_on_point_config_task_and_version(tmp_path, monkeypatch):
    k = task_key({"lr": 0.1, "seed": 1}, config={"n": 10}, task="f", version="1")
    assert k == task_key({"seed": 1, "lr": 0.1}, config={"n": 10}, task="f", version="1")
    assert k == task_key({"lr": np.float64(0.1), "seed": np.int64(1)}, config={"n": 10},
                         task="f", version="1")  # fmt: skip
    others = [
        task_key({"lr": 0.1, "seed": 2}, config={"n": 10}, task="f", version="1"),
        task_key({"lr": 0.1, "seed": 1}, config={"n": 11}, task="f", version="1"),
        task_key({"lr": 0.1, "seed": 1}, config={"n": 10}, task="g", version="1"),
        task_key({"lr": 0.1, "seed": 1}, config={"n": 10}, task="f", version="2"),
    ]
    assert len({k, *others}) == 5
    with pytest.raises(TypeError, match="JSON-like"):
        task_key({"problem": object()})
    # gdflow's version is part of a cache's keys: a new version recomputes.
    calls = []

    def f(p):
        calls.append(p)
        return p["a"]

    sweep(f, {"a": [1, 2]}, cache=tmp_path, progress=False)
    sweep(f, {"a": [1, 2]}, cache=tmp_path, progress=False)
    assert len(calls) == 2
    monkeypatch.setattr(gf, "__version__", gf.__version__ + ".post1")
    sweep(f, {"a": [1, 2]}, cache=tmp_path, progress=False)
    assert len(calls) == 4


def test_rerun_skips_finished_tasks_and_retries_failures(tmp_path):
    calls = []

    def f(p):
        calls.append(p["x"])
        if p["x"] == 3:
            raise ValueError("three")
        return {"y": np.array([p["x"], p["x"] ** 2], dtype=np.float64)}

    grid = {"x": [1, 2, 3, 4]}
    first = sweep(f, grid, cache=tmp_path, config={"size": 1}, progress=False)
    assert calls == [1, 2, 3, 4] and len(first.failures) == 1
    second = sweep(f, grid, cache=tmp_path, config={"size": 1}, progress=False)
    assert calls == [1, 2, 3, 4, 3]  # only the failed point again
    assert second.cached == (True, True, False, True)
    for a, b in zip(first.values, second.values):
        assert (a is None and b is None) or a["y"].tobytes() == b["y"].tobytes()
    sweep(f, grid, cache=tmp_path, config={"size": 2}, progress=False)  # another config
    assert len(calls) == 9


def test_interrupted_run_loses_only_the_task_in_flight(tmp_path):
    """KeyboardInterrupt at the k-th task: the k-1 finished ones are on disk; the rerun
    computes exactly the rest."""
    calls = []
    k, n = 4, 7
    interrupt = [True]

    def f(p):
        calls.append(p["i"])
        if interrupt[0] and len(calls) == k:
            raise KeyboardInterrupt
        return float(p["i"]) ** 0.5

    grid = [{"i": i} for i in range(n)]
    with pytest.raises(KeyboardInterrupt):
        sweep(f, grid, cache=tmp_path, progress=False)
    assert len(ResultCache(tmp_path)) == k - 1
    calls.clear()
    interrupt[0] = False
    res = sweep(f, grid, cache=tmp_path, progress=False)
    assert calls == list(range(k - 1, n))  # recomputed: the interrupted task and the rest
    assert res.values == tuple(float(i) ** 0.5 for i in range(n))
    assert res.cached == (True,) * (k - 1) + (False,) * (n - k + 1)


def test_killed_process_loses_at_most_the_task_in_flight(tmp_path):
    """A sweep in a subprocess killed with SIGKILL mid-run; the rerun recomputes only the
    tasks that had not been written, and every written entry is whole."""
    n = 40
    log = tmp_path / "calls.txt"
    script = textwrap.dedent(
        f"""
        import time
        from gdflow import sweep

        def f(p):
            with open({str(log)!r}, "a") as fh:
                fh.write(f"{{p['i']}}\\n")
            time.sleep(0.05)
            return {{"i": p["i"], "root": p["i"] ** 0.5}}

        sweep(f, [{{"i": i}} for i in range(n)], cache={str(tmp_path / "cache")!r},
              progress=False)
        """
    ).replace("range(n)", f"range({n})")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill once a few tasks are done
            if log.exists() and len(log.read_text().split()) >= 8:
                break
            if proc.poll() is not None:
                pytest.fail(f"the sweep subprocess exited early with {proc.returncode}")
            time.sleep(0.02)
        else:
            pytest.fail("the sweep subprocess did not start tasks within 120 s")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    started = [int(x) for x in log.read_text().split()]
    cache = ResultCache(tmp_path / "cache")
    done = len(cache)
    assert 0 < done < n
    assert len(started) - done <= 1  # at most the task in flight was lost

    # the rerun, in this process, with the same function name (`f` in `__main__`)
    def f(p):
        calls.append(p["i"])
        return {"i": p["i"], "root": p["i"] ** 0.5}

    f.__module__, f.__qualname__ = "__main__", "f"
    calls = []
    res = sweep(f, [{"i": i} for i in range(n)], cache=cache, progress=False)
    assert len(calls) == n - done and sum(res.cached) == done
    assert calls == list(range(done, n))  # in-process runs in order
    assert [v["i"] for v in res.values] == list(range(n))
    assert all(v["root"] == i**0.5 for i, v in enumerate(res.values))


# --- a real Dask cluster --------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    # Generous timeouts: the cores are shared; start-up of two spawned workers that import
    # JAX can take tens of seconds on a loaded machine.
    c = local_cluster(2, x64=True, timeout=120)
    try:
        c.wait_for_workers(2, timeout=120)
        yield c
    finally:
        c.close()


def test_workers_are_spawned_and_have_x64(client):
    assert jax.config.jax_enable_x64  # conftest; the in-process reference below needs it
    res = sweep(worker_facts, [{"i": i} for i in range(6)], executor=client, jax_config=None)
    facts = res.unwrap()
    assert all(f["pid"] != os.getpid() for f in facts)
    assert all(f["spawned"] for f in facts)  # started by spawn, not forked from us
    assert all(f["x64"] and f["dtype"] == "float64" for f in facts)  # local_cluster(x64=True)
    # jax_config: set per task in the worker before it runs (then back to the caller's)
    off = sweep(worker_facts, [{"i": 0}], executor=client, jax_config={"jax_enable_x64": False})
    assert off.values[0]["x64"] is False and off.values[0]["dtype"] == "float32"
    back = sweep(worker_facts, [{"i": 0}, {"i": 1}], executor=client)  # "inherit"
    assert all(v["x64"] for v in back.values)


def test_cluster_results_are_bit_identical_to_in_process(client, tmp_path):
    local = sweep(descent_run, DESCENT_GRID, progress=False)
    remote = sweep(descent_run, DESCENT_GRID, executor=client, cache=tmp_path, progress=False)
    assert remote.points == local.points and remote.failures == ()
    for a, b in zip(local.values, remote.values):
        for name in ("params", "loss"):
            assert a[name].dtype == b[name].dtype == np.float64
            assert a[name].tobytes() == b[name].tobytes()  # to the bit
    # the cached copies are the same bits, and a rerun computes nothing
    again = sweep(descent_run, DESCENT_GRID, executor=client, cache=tmp_path, progress=False)
    assert all(again.cached)
    assert all(a["params"].tobytes() == b["params"].tobytes()
               for a, b in zip(local.values, again.values))  # fmt: skip


def test_cluster_failures_order_keys_and_scheduler_address(client):
    res = sweep(inverse, {"x": [1.0, 0.0, 0.5, 2.0]}, scheduler=client.scheduler.address)
    assert res.values == (1.0, None, 2.0, 0.5)
    (f,) = res.failures
    assert f.index == 1 and f.type == "ZeroDivisionError" and "in inverse" in f.traceback
    # the cache key is the same in another process (no salted hash)
    pts = [{"point": {"lr": 0.1, "seed": s, "tag": ("a", 1.5)}, "config": {"n": 3}}
           for s in range(3)]  # fmt: skip
    remote = sweep(key_of, pts, executor=client, progress=False).unwrap()
    assert remote == [key_of(p) for p in pts]


def test_executor_for_command_line_flags():
    from gdflow import sweep_executor as executor

    with executor() as ex:  # neither flag: in-process
        assert ex is None
        assert sweep(poly, {"a": [1], "b": [2]}, executor=ex, progress=False).values == (12,)
    with pytest.raises(ValueError, match="not both"):
        executor(workers=2, scheduler="tcp://x:1")
    with pytest.raises(ValueError, match="positive integer"):
        executor(workers=0)
    with pytest.raises(ValueError, match="positive integer"):
        local_cluster(0)
    with pytest.raises(TypeError, match="x64 must be"):
        local_cluster(1, x64="yes")


def test_any_concurrent_futures_executor_keeps_grid_order():
    """Tasks finishing out of order (later points sleep less) still come back in order."""
    from concurrent.futures import ThreadPoolExecutor

    def slow(p):
        time.sleep(0.05 * (3 - p["i"]))
        return p["i"] ** 2

    with ThreadPoolExecutor(max_workers=4) as pool:
        res = sweep(slow, {"i": [0, 1, 2, 3]}, executor=pool, progress=False)
    assert res.values == (0, 1, 4, 9)
