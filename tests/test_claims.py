"""Claims: verdicts computed by their rules, and the verdicts the quick size reaches."""

import concurrent.futures
import dataclasses
import json
import math
import types

import pytest

from gdflow.experiments import minibatch_flow
from gdflow.experiments._base import (
    DIFFERS,
    HOLDS,
    NO_PUBLISHED,
    AtLeast,
    AtMost,
    Claim,
    Close,
    claims_table,
    jsonable,
    run_tasks,
    verdicts,
)


def test_rules_decide_verdicts():
    c = Claim("x", "x is about 64", 64, 70.0, Close(rtol=0.25))
    assert c.verdict == HOLDS  # |70 - 64| = 6 <= 16
    assert dataclasses.replace(c, measured=350.0).verdict == DIFFERS
    assert dataclasses.replace(c, measured=None).verdict == DIFFERS
    assert dataclasses.replace(c, measured=math.nan).verdict == DIFFERS
    assert dataclasses.replace(c, published=None).verdict == NO_PUBLISHED
    assert Claim("b", "", 1.0, 0.5, AtMost()).verdict == HOLDS
    assert Claim("b", "", 1.0, 1.5, AtMost()).verdict == DIFFERS
    assert Claim("b", "", 1.0, 1.5, AtLeast()).verdict == HOLDS
    assert Claim("b", "", 2.0, 1.5, AtLeast(factor=0.5)).verdict == HOLDS
    assert Close(atol=0.2).holds(1.0, 1.2) and not Close(atol=0.2).holds(1.0, 1.21)


def test_claims_table_and_json():
    claims = (
        Claim("a", "order of |e|", 2.0, 1.94, Close(atol=0.25)),
        Claim("b", "a quantity", None, 0.5, AtLeast()),
    )
    table = claims_table(claims).splitlines()
    assert table[0] == "| claim | text | gdflow | verdict |"
    assert "none given" in table[3] and NO_PUBLISHED in table[3]
    assert "\\|e\\|" in table[2] and "holds" in table[2]
    rec = json.loads(json.dumps(jsonable(list(claims))))
    assert set(rec[0]) >= {"claim", "text", "published", "measured", "rule", "verdict"}
    assert rec[0]["verdict"] == HOLDS and rec[1]["verdict"] == NO_PUBLISHED


def test_run_tasks_same_in_process_and_on_an_executor():
    tasks = [(3, 4), (5, 12)]
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        assert run_tasks(math.hypot, tasks, ex) == run_tasks(math.hypot, tasks) == [5.0, 13.0]


def test_run_tasks_progress_counts_finished_tasks_not_submissions():
    # Workers that cannot start until a gate opens (after the submissions): a bar that
    # counted submissions would advance three times with nothing finished.
    import threading

    gate, lock, finished, seen = threading.Event(), threading.Lock(), [], []

    def task(a, b):
        gate.wait()
        with lock:
            finished.append((a, b))
        return math.hypot(a, b)

    def track(iterable):
        assert len(iterable) == 3  # the bar's total
        threading.Timer(0.05, gate.set).start()
        for item in iterable:
            with lock:
                seen.append(len(finished))
            yield item

    tasks = [(3, 4), (5, 12), (8, 15)]
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        assert run_tasks(task, tasks, ex, track=track) == [5.0, 13.0, 17.0]
    assert len(seen) == 3 and all(n >= k + 1 for k, n in enumerate(seen))
    # in process (tasks run inside `submit`), each is reported as soon as it finishes
    from gdflow.experiments._base import CachedExecutor

    seen.clear()
    finished.clear()

    def track_in_process(iterable):
        for item in iterable:
            seen.append(len(finished))
            yield item

    got = run_tasks(task, tasks, CachedExecutor(None), track=track_in_process)
    assert got == [5.0, 13.0, 17.0] and seen == [1, 2, 3]

    # futures that offer only `.result()`: all are submitted before any is waited on
    submitted = []

    class ResultOnly:
        def __init__(self, pool):
            self.pool = pool

        def submit(self, fn, *task):
            submitted.append(task)
            return types.SimpleNamespace(result=self.pool.submit(fn, *task).result)

    def track_submitted(iterable):
        for item in iterable:
            seen.append(len(submitted))
            yield item

    seen.clear()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        got = run_tasks(math.hypot, tasks, ResultOnly(pool), track=track_submitted)
    assert got == [5.0, 13.0, 17.0] and seen == [3, 3, 3]


def test_run_tasks_sends_the_costliest_first_and_answers_in_task_order():
    sent = []

    class Recording:  # an executor that records the order of submission
        def submit(self, fn, *task):
            sent.append(task)
            done = concurrent.futures.Future()
            done.set_result(fn(*task))
            return done

    tasks = [(1, 1), (5, 12), (3, 4), (8, 15)]
    got = run_tasks(math.hypot, tasks, Recording(), cost=lambda t: t[0])
    assert got == [math.sqrt(2), 13.0, 5.0, 17.0]
    assert sent == [(8, 15), (5, 12), (3, 4), (1, 1)]
    sent.clear()
    assert run_tasks(math.hypot, tasks, Recording(), cost=lambda t: 0) == got
    assert sent == tasks  # ties keep the task order
    # in process too
    assert run_tasks(math.hypot, tasks, cost=lambda t: -t[0]) == got
    # a cost that is not a function, or not a finite number, is refused by name
    with pytest.raises(TypeError, match="`cost` must be a function"):
        run_tasks(math.hypot, tasks, cost=3.0)
    for value in ("big", float("nan"), None):
        with pytest.raises(ValueError, match="`cost` must return a finite number"):
            run_tasks(math.hypot, tasks, cost=lambda t, v=value: v)


def test_task_labels_name_the_task_not_its_config_or_data():
    import numpy as np

    from gdflow.experiments import gf_vs_gd
    from gdflow.experiments._base import (
        CachedExecutor,
        apply_task,
        describe_tasks,
        task_label,
    )

    config = gf_vs_gd.config("quick")
    assert task_label(gf_vs_gd.net_task, (config, "digits", "relu", True)) == (
        "net_task('digits', 'relu', True)"
    )
    # a task sent through apply_task is named by the function it applies
    assert task_label(apply_task, (gf_vs_gd.deep_linear_task, config)) == "deep_linear_task()"
    label = task_label(math.hypot, (np.zeros((3, 2)), np.float64(0.5), (1, 2.5)))
    assert label == "hypot(array(3, 2), 0.5, (1, 2.5))"
    # an executor without a cache times each task and answers plain values
    ex = CachedExecutor(None)
    assert run_tasks(math.hypot, [(3, 4), (3, 4), (5, 12)], ex) == [5.0, 5.0, 13.0]
    assert (ex.misses, ex.hits) == (3, 0)
    assert set(ex.seconds) == {"hypot(3, 4)", "hypot(3, 4) #2", "hypot(5, 12)"}
    line = describe_tasks({"computed": 3, "from_cache": 0, "seconds": {"a": 2.0, "b": 0.5}})
    assert line == "3 computed, 0 from the cache; 2.5 s of task time, longest `a` 2.0 s, `b` 0.5 s"


@pytest.fixture(scope="module")
def minibatch_quick():
    return minibatch_flow.run(minibatch_flow.config("quick"))


def test_minibatch_flow_quick_verdicts(minibatch_quick):
    v = verdicts(minibatch_quick.claims)
    expected_differs = {"approx_vs_full_gf"}  # the approximation errs twice as much as GF
    for claim, verdict in v.items():
        assert verdict == (DIFFERS if claim in expected_differs else HOLDS), claim
    text = minibatch_flow.report(minibatch_quick)
    assert text.startswith("| claim | text | gdflow | verdict |")


def test_a_wrong_measured_value_flips_the_verdict(minibatch_quick):
    claim = next(c for c in minibatch_quick.claims if c.claim == "closed_form_exact")
    assert claim.verdict == HOLDS
    wrong = dataclasses.replace(claim, measured=claim.measured + 1e-3)
    assert wrong.verdict == DIFFERS
    # and through the whole pipeline: claims are recomputed from the numbers
    f = dict(minibatch_quick.figure, closed_vs_numeric_max=0.5)
    claims = minibatch_flow.make_claims(
        minibatch_quick.config,
        f,
        minibatch_quick.rows,
        minibatch_quick.orders,
        minibatch_quick.many,
    )
    assert verdicts(claims)["closed_form_exact"] == DIFFERS
