"""The command end to end: `gdflow reproduce all --quick` writes figures, results and a report."""

import concurrent.futures as cf
import json
import os
import subprocess
import sys

import pytest

from gdflow.cli import main
from gdflow.experiments import registry
from gdflow.experiments.edge_of_stability import find_anchor


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in registry():
        assert name in out


# Verdicts the quick size reaches (computed by each claim's rule from the run's numbers).
QUICK_VERDICTS = {
    "modified-loss": {
        "gd_runs_ahead": "holds",
        "gd_closed_form": "holds",
        "modified_gf_closer": "holds",
        "local_order_1": "holds",
        "global_order_1": "holds",
        "sgd_modified_closer": "holds",
    },
    "minibatch-flow": {
        "closed_form_exact": "holds",
        "approx_order": "holds",
        "approx_vs_full_gf": "differs",
        "switched_is_exact_splitting": "holds",
        "strang_order": "holds",
    },
    "gf-vs-gd": {
        "digits.linear.first_order": "holds",
        "digits.linear.estimate_bounds_gap": "holds",
        "digits.relu.slight_change": "no published value",
        "deep_linear.global_min": "holds",
    },
    "edge-of-stability": {
        "tanh_mse.tracks_below_edge": "holds",
        "relu_cross_entropy.tracks_below_edge": "holds",
        "relu_cross_entropy.gf_accurate": "holds",
        "relu_cross_entropy.f2.5.hovers": "holds",
        "relu_cross_entropy.f2.5.leaves_gf": "holds",
        "relu_cross_entropy.f2.5.non_monotone": "holds",
        "cf.holds_edge": "holds",
        "cf.cost": "holds",
        "cf.loss_decreases": "holds",
        **(
            {
                "cf.same_gd": "holds",
                "cf.same_gd_smoothed": "holds",
                "cf.prediction_mean": "holds",
                "cf.prediction_max": "holds",
                "cf.gd_gf_max": "holds",
            }
            if find_anchor() is not None
            else {"cf.prediction_mean": "no published value"}
        ),
    },
    "splitting": {
        "random_lls.split_plateau_steps": "differs",
        "random_lls.sgd_best_steps": "differs",
        "random_lls.split_stable": "holds",
    },
}


def test_reproduce_all_quick(tmp_path):
    """`make quick`: every experiment whole on one of two spawned workers. (That a worker
    computes what this process would, to the bit, is checked on minibatch-flow below.)"""
    out = tmp_path / "res"
    argv = ["reproduce", "all", "--quick", "--out", str(out), "--no-progress"]
    assert main([*argv, "--workers", "2", "--spread", "experiments"]) == 0
    report = (out / "report.md").read_text()
    names = list(registry())
    assert "modified-loss" in names
    assert "differs (" in report and "holds (" in report
    for name in names:
        record = json.loads((out / name / "results.json").read_text())
        assert record["status"] == "ok", record.get("traceback")
        assert record["figures"], f"{name} wrote no figure"
        for fig in record["figures"]:
            assert (out / name / fig).stat().st_size > 1000
            assert f"({name}/{fig})" in report
        assert record["title"] in report
        # every section opens with its claims table; results.json holds the claims
        assert record["text"].startswith("| claim | text | gdflow | verdict |")
        verdicts = {c["claim"]: c["verdict"] for c in record["claims"]}
        for c in record["claims"]:
            assert set(c) >= {"claim", "text", "published", "measured", "rule", "verdict"}
            assert c["verdict"] in ("holds", "differs", "no published value")
        for claim, verdict in QUICK_VERDICTS.get(name, {}).items():
            assert verdicts[claim] == verdict, (name, claim, record["claims"])
        assert record["machine"]["cpu_count"] >= 1
        assert record["process"]["pid"] != os.getpid()  # on a worker
    assert "*Machine:*" in report and "CPU core" in report
    assert not list(out.glob(".*"))  # no temporary folder left behind


def test_bad_arguments(tmp_path, capsys):
    assert main(["reproduce", "no-such", "--out", str(tmp_path)]) == 2
    assert "unknown experiment" in capsys.readouterr().err
    assert main(["reproduce", "modified-loss", "--out", str(tmp_path), "--seeds", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["reproduce", "all", "--quick", "--full"])
    missing = tmp_path / "nope"
    assert (
        main(["reproduce", "modified-loss", "--out", str(tmp_path), "--data", str(missing)]) == 2
    )


def test_python_dash_m_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "gdflow", "list"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "modified-loss" in done.stdout


def test_md_table_keeps_norm_bars_in_their_column():
    import re

    from gdflow.experiments._base import md_table

    table = md_table(["net", "|θ(T) − θ0|"], [["linear", 6.367], ["|a|", 0.5]])
    for line in table.splitlines():
        # unescaped bars: one per column boundary (3 for two columns)
        assert len(re.findall(r"(?<!\\)\|", line)) == 3, line
    assert "\\|θ(T) − θ0\\|" in table and "6.367" in table


def _numbers(out, name):
    record = json.loads((out / name / "results.json").read_text())
    assert record["status"] == "ok", record.get("error")
    return record


def test_experiment_tasks_are_cached_resumed_and_run_on_a_real_dask_cluster(tmp_path):
    """A rerun skips finished tasks (deleting some entries recomputes exactly those), and
    the same experiment on a 2-worker LocalCluster gives the same numbers to the bit."""
    name = "minibatch-flow"
    first = tmp_path / "a"
    assert main(["reproduce", name, "--quick", "--out", str(first), "--no-progress"]) == 0
    rec = _numbers(first, name)
    total = rec["tasks"]["computed"]
    assert total >= 5 and rec["tasks"]["from_cache"] == 0
    # every computed task is timed, under its own label
    labels = rec["tasks"]["seconds"]
    assert len(labels) == total and all(s > 0 for s in labels.values())
    report = (first / "report.md").read_text()
    assert f"*Tasks:* {total} computed, 0 from the cache; " in report
    entries = sorted((first / name / "cache").rglob("*.npz"))
    assert len(entries) == total
    for path in entries[:3]:  # as if the run had been interrupted before these finished
        path.unlink()
    assert main(["reproduce", name, "--quick", "--out", str(first), "--no-progress"]) == 0
    again = _numbers(first, name)
    assert (again["tasks"]["computed"], again["tasks"]["from_cache"]) == (3, total - 3)
    assert set(again["tasks"]["seconds"]) < set(labels) and len(again["tasks"]["seconds"]) == 3
    assert again["numbers"] == rec["numbers"]

    cluster = tmp_path / "b"
    argv = ["reproduce", name, "--quick", "--out", str(cluster), "--no-progress"]
    assert main([*argv, "--workers", "2", "--no-cache"]) == 0
    remote = _numbers(cluster, name)
    assert not (cluster / name / "cache").exists()
    # timed on the workers, and the same tasks
    assert remote["tasks"]["computed"] == total and remote["tasks"]["from_cache"] == 0
    assert set(remote["tasks"]["seconds"]) == set(labels)
    assert remote["numbers"] == rec["numbers"]
    assert [c["verdict"] for c in remote["claims"]] == [c["verdict"] for c in rec["claims"]]

    # The whole experiment as one task on a worker: its tasks in order there, cached there.
    whole = tmp_path / "c"
    argv = ["reproduce", name, "--quick", "--out", str(whole), "--no-progress"]
    assert main([*argv, "--workers", "2", "--spread", "experiments"]) == 0
    on_worker = _numbers(whole, name)
    assert on_worker["numbers"] == rec["numbers"]
    assert rec["process"]["pid"] == os.getpid() != on_worker["process"]["pid"]
    assert (on_worker["tasks"]["computed"], on_worker["tasks"]["from_cache"]) == (total, 0)
    assert len(list((whole / name / "cache").rglob("*.npz"))) == total
    assert not list(whole.glob(".*"))


def test_cache_keys_see_every_digit_of_array_arguments():
    import numpy as np

    from gdflow.experiments._base import _stable_repr

    a = np.array([0.1, 0.2])
    b = np.array([0.1, 0.2 + 1e-12])
    assert repr(a) == repr(b) and _stable_repr((a,)) != _stable_repr((b,))
    big = np.zeros(2000)
    other = big.copy()
    other[1000] = 1.0
    assert _stable_repr(big) != _stable_repr(other)
    assert _stable_repr((main, 1.0)) == f"(<{main.__module__}.main>, 1.0)"


def test_no_cache_recomputes_but_keeps_the_cache(tmp_path):
    name = "minibatch-flow"
    argv = ["reproduce", name, "--quick", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    entries = sorted((tmp_path / name / "cache").rglob("*.npz"))
    assert main([*argv, "--no-cache"]) == 0
    assert sorted((tmp_path / name / "cache").rglob("*.npz")) == entries
    tasks = _numbers(tmp_path, name)["tasks"]
    assert tasks["from_cache"] == 0 and tasks["computed"] == len(entries)


def test_workers_and_scheduler_are_checked(tmp_path, capsys):
    argv = ["reproduce", "minibatch-flow", "--quick", "--out", str(tmp_path)]
    assert main([*argv, "--workers", "0"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one or the other, not both
        main([*argv, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*argv, "--workers", "2", "--spread", "experiment"])
    assert "--spread: invalid choice: 'experiment'" in capsys.readouterr().err


def test_experiment_seconds_are_checked():
    from gdflow.experiments import Experiment

    parts = dict(config=None, run=None, figures=None, report=None)
    for bad in ({"smoke": 3.0}, {"quick": -1.0}, {"quick": float("nan")}, {"quick": "3"}):
        with pytest.raises(ValueError, match="'x': `seconds` maps sizes"):
            Experiment("x", "t", "s", "sum", **parts, seconds=bad)
    assert Experiment("x", "t", "s", "sum", **parts, seconds={"quick": 3}).seconds["quick"] == 3


class _Recording(cf.Executor):
    """Records the submissions; `outcome(args)` says what each future does: an exception
    (it fails, as if its worker were lost), `None` (it never finishes) or a record (it
    finishes, timed as a worker's task is)."""

    def __init__(self, outcome):
        self.outcome, self.calls, self.futures, self.fns = outcome, [], [], []

    def submit(self, fn, *args):
        from gdflow.experiments._base import _Timed

        self.fns.append(fn)
        self.calls.append(args)
        future = cf.Future()
        self.futures.append(future)
        what = self.outcome(args)
        if isinstance(what, BaseException):
            future.set_exception(what)
        elif what is not None:
            future.set_result(_Timed(what, 1.0))
        return future


def _lost(args):
    return RuntimeError("worker lost")


def test_spread_experiments_submits_longest_first_and_records_a_lost_worker(tmp_path):
    from gdflow._sweep import jax_settings
    from gdflow.experiments import reproduce

    names = ["modified-loss", "minibatch-flow", "edge-of-stability", "splitting"]
    typical = {n: registry()[n].seconds["quick"] for n in names}
    assert len(set(typical.values())) == len(names)  # a strict order to check
    ex = _Recording(_lost)
    kw = dict(size="quick", executor=ex, spread="experiments", progress=False, log=lambda m: None)
    records = reproduce([*names, "splitting"], tmp_path, **kw)  # each name runs once
    assert [args[0] for args in ex.calls] == sorted(names, key=lambda n: -typical[n])
    assert list(records) == names
    # every worker gets the caller's JAX options, and a marker that only this run wrote
    assert all(fn.settings == jax_settings() for fn in ex.fns)
    assert len({args[2] for args in ex.calls}) == 1 and ex.calls[0][2].startswith(".gdflow-")
    report = (tmp_path / "report.md").read_text()
    for n in names:
        saved = json.loads((tmp_path / n / "results.json").read_text())
        assert saved["status"] == records[n]["status"] == "failed"
        assert saved["error"] == "RuntimeError: worker lost"
        assert "RuntimeError: worker lost" in saved["traceback"]
    assert report.count("**This experiment failed:**") == len(names)
    assert not list(tmp_path.glob(".*"))  # the marker too

    # A time measured in `out` at this size, by a run that finished and computed its
    # tasks, comes before the typical one; failed runs, runs at another size and runs
    # answered from the cache do not count.
    def finished(name, size, seconds, from_cache=0):
        record = {"name": name, "status": "ok", "size": size, "seconds": seconds}
        record["tasks"] = {"computed": 5, "from_cache": from_cache}
        (tmp_path / name / "results.json").write_text(json.dumps(record))

    finished("minibatch-flow", "quick", 1000.0)
    finished("modified-loss", "default", 5000.0)
    finished("splitting", "quick", 2000.0, from_cache=5)
    ex = _Recording(_lost)
    reproduce(names, tmp_path, **{**kw, "executor": ex})
    expected = [
        "minibatch-flow",
        *sorted(set(names) - {"minibatch-flow"}, key=lambda n: -typical[n]),
    ]
    assert [args[0] for args in ex.calls] == expected


def test_spread_is_checked_and_a_worker_that_cannot_see_out_or_data_says_so(tmp_path):
    from gdflow.experiments import reproduce
    from gdflow.experiments._runner import _run_whole

    with pytest.raises(ValueError, match="`spread` must be one of"):
        reproduce(["minibatch-flow"], tmp_path, spread="experiment")
    # a folder of the same name is not enough: the caller's marker must be in it
    args = ("quick", None, None, True)
    with pytest.raises(RuntimeError, match="cannot see the output folder .*spread='tasks'"):
        _run_whole("minibatch-flow", str(tmp_path), ".gdflow-run-x", *args)
    (tmp_path / ".gdflow-run-x").write_text("")
    with pytest.raises(ValueError, match="`--data` .*nodata is not a directory"):
        nodata = str(tmp_path / "nodata")
        _run_whole("minibatch-flow", str(tmp_path), ".gdflow-run-x", "quick", nodata, None, True)


def test_a_run_stopped_while_moving_its_folder_loses_neither_results_nor_cache(tmp_path):
    """A worker killed between `out/NAME -> .NAME.old` and `.NAME.partial -> out/NAME`
    (the cache already moved into the partial folder): the next run puts both back."""
    from gdflow.experiments._runner import _fresh_partial

    old, partial = tmp_path / ".a.old", tmp_path / ".a.partial"
    old.mkdir()
    (old / "results.json").write_text("{}")
    (partial / "cache").mkdir(parents=True)
    (partial / "cache" / "t.npz").write_bytes(b"x")
    (partial / "f.png").write_bytes(b"half-written")
    fresh = _fresh_partial(tmp_path, "a")
    assert fresh == partial and not list(fresh.iterdir())
    assert (tmp_path / "a" / "results.json").read_text() == "{}"
    assert (tmp_path / "a" / "cache" / "t.npz").read_bytes() == b"x"
    assert not old.exists()


def test_ctrl_c_with_whole_experiments_on_workers_keeps_what_finished(tmp_path):
    from gdflow.experiments import Interrupted, reproduce

    def outcome(args):  # minibatch-flow finishes; the others never do
        return {"status": "ok", "seconds": 1.0} if args[0] == "minibatch-flow" else None

    def log(message):  # Ctrl-C just as the first experiment is reported done
        if "done in" in message:
            raise KeyboardInterrupt

    ex = _Recording(outcome)
    names = ["modified-loss", "minibatch-flow", "sgd-sde"]
    kw = dict(size="quick", executor=ex, spread="experiments", progress=False, log=log)
    with pytest.raises(Interrupted) as info:
        reproduce(names, tmp_path, **kw)
    assert info.value.finished == ["minibatch-flow"]
    assert info.value.name == "modified-loss, sgd-sde"
    message = str(info.value)
    assert "during the unfinished 'modified-loss', 'sgd-sde';" in message
    assert "keeps minibatch-flow" in message and str(tmp_path / "NAME" / "cache") in message
    pending = [f for args, f in zip(ex.calls, ex.futures) if args[0] != "minibatch-flow"]
    assert len(pending) == 2 and all(f.cancelled() for f in pending)
    assert (tmp_path / "report.md").exists() and not list(tmp_path.glob(".gdflow-*"))
