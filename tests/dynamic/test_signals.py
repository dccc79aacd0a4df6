"""Signal nodes: ``wf.add_signal`` held on the scheduler until ``engine.signal`` delivers a value."""
from __future__ import annotations

import time

import pytest

import cleo_dask as cd
from cleo_dask.admission.plugin import admission_state
from cleo_dask.core.signal import SignalTimeout


@cd.task
def draft(agent):
    return "a draft"


@cd.task
def publish(agent, draft, approval):
    return f"{draft} approved={approval['approved']}"


@cd.task
def publish_go(agent, go):
    return go + 1


def approval_workflow(timeout=None, trigger="all_success"):
    wf = cd.Workflow("approve")
    d = wf.add(draft)
    ok = wf.add_signal("approval", after=[d], timeout=timeout)
    wf.add(publish, after=[d, ok], trigger=trigger)
    return wf


def _held(engine, n=1, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if admission_state(engine.client).get("held", 0) >= 0 and _waiting(engine) >= n:
            return True
        time.sleep(0.05)
    return False


def _waiting(engine):
    return engine.client.run_on_scheduler(
        lambda dask_scheduler=None: len(dask_scheduler.plugins["cleo-admission"].signals.held))


def test_a_signal_node_waits_on_the_scheduler_and_takes_the_signal_value(engine, agent):
    run = engine.submit(approval_workflow(), agent)
    assert _held(engine)                     # held on the scheduler, not on a worker
    assert not run.done()
    assert engine.signal(run.id, "approval", {"approved": True}) == "delivered"
    out = run.result(timeout=30)
    assert out["approval"].value == {"approved": True}
    assert out["publish"].value == "a draft approved=True"


def test_a_signal_sent_before_the_node_is_ready_is_kept(engine, agent):
    @cd.task
    def slow(agent):
        time.sleep(0.5)
        return 1

    wf = cd.Workflow("early")
    s = wf.add(slow)
    ok = wf.add_signal("go", after=[s])
    wf.add(publish_go, after=[ok])
    run = engine.submit(wf, agent)
    engine.signal(run.id, "go", 42)
    out = run.result(timeout=30)
    assert out["go"].value == 42 and out["publish_go"].value == 43


def test_a_signal_that_never_comes_times_out_and_trigger_rules_apply(engine, agent):
    run = engine.submit(approval_workflow(timeout=0.3), agent)
    out = run.result(timeout=30)
    assert out["approval"].status == cd.Status.FAILED
    assert isinstance(out["approval"].error, SignalTimeout)
    assert isinstance(out["approval"].error, TimeoutError)
    assert "did not arrive within 0.3 s" in str(out["approval"].error)
    assert out["publish"].status == cd.Status.UPSTREAM_FAILED


def test_bad_signals_are_cleo_errors(engine, agent):
    run = engine.submit(approval_workflow(), agent)
    with pytest.raises(cd.CleoError, match="has no signal 'approve'.*'approval'"):
        engine.signal(run.id, "approve", True)
    with pytest.raises(cd.CleoError, match="no run 'nope'"):
        engine.signal("nope", "approval", True)
    engine.signal(run.id, "approval", {"approved": False})
    run.result(timeout=30)
    with pytest.raises(cd.CleoError, match="already finished"):
        engine.signal(run.id, "approval", True)


def test_cancelling_a_run_cancels_its_waits(engine, agent):
    run = engine.submit(approval_workflow(timeout=600), agent)
    assert _held(engine)
    run.cancel()
    assert run.result(timeout=30)["approval"].status == cd.Status.CANCELLED
    end = time.time() + 10
    while _waiting(engine) and time.time() < end:
        time.sleep(0.05)
    assert _waiting(engine) == 0


def test_add_signal_bad_input(agent):
    wf = cd.Workflow()
    with pytest.raises(cd.WorkflowError, match="timeout must be a positive number"):
        wf.add_signal("approval", timeout=-1)
    with pytest.raises(cd.WorkflowError, match="unknown node 'x'"):
        wf.add_signal("approval", after=["x"])
    assert not wf.nodes
