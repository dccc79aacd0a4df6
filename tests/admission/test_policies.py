"""Pure policy logic (backoff, retry decisions, trigger rules, validation): no cluster needed."""
from __future__ import annotations

import random
import threading

import networkx as nx
import pytest

import cleo_dask as cd
from cleo_dask.runs.driver import Driver
from cleo_dask.failures.retry import RetryPolicy
from cleo_dask.failures.rules import skip_reason


def test_fixed_backoff_is_constant():
    assert [cd.fixed(5.0).delay(a) for a in (1, 2, 3)] == [5.0, 5.0, 5.0]


def test_exponential_backoff_grows_and_caps():
    b = cd.exponential(first=1.0, factor=2.0, max=5.0)
    assert [b.delay(a) for a in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_exponential_jitter_stays_within_bounds():
    b = cd.exponential(first=10.0, factor=1.0, max=60.0, jitter=0.1)
    rng = random.Random(1)
    delays = [b.delay(1, rng) for _ in range(200)]
    assert all(9.0 <= d <= 11.0 for d in delays) and len(set(delays)) > 1


def test_retry_policy_only_on_listed_errors_and_within_budget():
    p = RetryPolicy(2, cd.fixed(1.0), (TimeoutError, ConnectionError))
    assert p.should_retry(TimeoutError(), 1)
    assert p.should_retry(ConnectionError(), 2)
    assert not p.should_retry(ConnectionError(), 3)       # budget spent
    assert not p.should_retry(KeyError(), 1)               # not listed
    assert p.should_retry(cd.Retry("again"), 1)            # a task may always ask
    assert p.delay(cd.Retry("soon", delay=0.25), 1) == 0.25
    assert not p.uses_dask_retries
    assert RetryPolicy(3).uses_dask_retries                # no delay, any error: Dask's retries=


def test_trigger_rules():
    ok = [("a", "succeeded"), ("b", "fell_back")]
    failed = [("a", "succeeded"), ("b", "failed")]
    assert skip_reason("all_success", ok) is None
    assert skip_reason("all_success", failed) == "upstream 'b' failed"
    assert skip_reason("all_success", [("a", "skipped")]) == "upstream 'a' was skipped"
    assert skip_reason("all_done", failed) is None
    assert skip_reason("one_failed", failed) is None
    assert skip_reason("one_failed", ok) == "no upstream task failed"


@pytest.mark.parametrize("make, message", [
    (lambda: cd.fixed(-1), "fixed backoff must be >= 0"),
    (lambda: cd.fixed("soon"), "must be a number of seconds"),
    (lambda: cd.exponential(first=-2), "'first' must be >= 0"),
    (lambda: cd.exponential(factor=0.5), "'factor' must be a number >= 1"),
    (lambda: cd.task(retries=-1)(lambda agent: 1), "retries must be an integer >= 0"),
    (lambda: cd.task(retry_on=(KeyError, "oops"))(lambda agent: 1), "retry_on must be an exception class"),
    (lambda: cd.task(timeout=-3)(lambda agent: 1), "timeout must be > 0 seconds"),
    (lambda: cd.task(fallback=42)(lambda agent: 1), "fallback must be a task"),
    (lambda: cd.Workflow().add(lambda agent: 1, name="x", trigger="sometimes"), "unknown trigger rule 'sometimes'"),
    (lambda: cd.Agent("a", max_concurrency=0), "max_concurrency must be an integer >= 1"),
])
def test_bad_policies_are_workflow_errors(make, message):
    with pytest.raises(cd.WorkflowError, match=message):
        make()


def test_workflow_errors_name_the_problem():
    def fetch(agent):
        return 1

    def summarize(agent, fetch):
        return fetch

    with pytest.raises(cd.WorkflowError, match="cycle: .*a -> b -> a|cycle: .*b -> a -> b"):
        cd.Workflow.from_networkx(nx.DiGraph([("a", "b"), ("b", "a")]), tasks={"a": fetch, "b": fetch})
    with pytest.raises(cd.WorkflowError, match="without a task: 'b'"):
        cd.Workflow.from_networkx(nx.DiGraph([("a", "b")]), tasks={"a": fetch})
    with pytest.raises(cd.WorkflowError, match="unknown node.*'zzz'"):
        cd.Workflow.from_networkx(nx.DiGraph([("a", "b")]), tasks={"a": fetch, "b": fetch, "zzz": fetch})
    wf = cd.Workflow()
    wf.add(fetch)
    with pytest.raises(cd.WorkflowError, match="unknown node 'nope'"):
        wf.add(summarize, after=["nope"])
    with pytest.raises(cd.WorkflowError, match="duplicate node name 'fetch'"):
        wf.add(fetch)
    with pytest.raises(cd.WorkflowError, match="not a task|not callable"):
        wf.add(42, name="x")
    with pytest.raises(cd.WorkflowError, match="cannot accept the result of parent 'fetch'"):
        wf.add(lambda agent, other=1: 1, name="y", after=["fetch"])
    with pytest.raises(cd.WorkflowError, match="requires argument 'fetch', the name of node 'fetch', which is not "
                                               r"among its parents: add after=\['fetch'\]"):
        wf.add(lambda agent, fetch: 1, name="forgot_after")
    assert list(wf.nodes) == ["fetch"]  # nothing already accepted was lost
    # an argument no parent provides is a workflow parameter, required when it has no default
    wf.add(lambda agent, fetch, missing: 1, name="z", after=["fetch"])
    assert wf.parameters == ("missing",) and wf.required_parameters == ("missing",)
    with pytest.raises(cd.WorkflowError, match="missing input 'missing'"):
        wf.validate(inputs={})


def test_tasks_come_in_three_shapes():
    class Greeter:
        name = "greet"

        def run(self, agent, **inputs):
            return f"hello {agent.id} {sorted(inputs)}"

    @cd.task
    def decorated(agent):
        return 1

    def plain(agent, **inputs):
        return inputs

    wf = cd.Workflow()
    wf.add(decorated)
    wf.add(plain, after=["decorated"])
    wf.add(Greeter(), after=["plain"])
    assert list(wf.nodes) == ["decorated", "plain", "greet"]
    assert decorated.run(cd.Agent("x")) == 1


def test_driver_runs_timed_callbacks_in_due_order_with_an_injected_clock():
    now = [100.0]
    driver = Driver(clock=lambda: now[0])
    seen, done = [], threading.Event()
    driver.call_later(5, seen.append, "late")
    driver.call_later(1, seen.append, "early")
    driver.call_soon(seen.append, "now")
    for _ in range(100):
        if seen == ["now"]:
            break
        threading.Event().wait(0.01)
    assert seen == ["now"]
    now[0] = 101.5
    driver.call_soon(lambda: None)
    driver.call_later(0, done.set)
    done.wait(2)
    for _ in range(100):
        if seen == ["now", "early"]:
            break
        threading.Event().wait(0.01)
    assert seen == ["now", "early"]
    now[0] = 106
    driver.call_later(0, lambda: None)
    for _ in range(100):
        if len(seen) == 3:
            break
        threading.Event().wait(0.01)
    assert seen == ["now", "early", "late"]
    driver.close()
