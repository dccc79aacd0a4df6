"""An exception on the engine's driver thread ends the run with a clear error, never hangs it
(issue 15, "also seen once": ``Run._handle_erred`` raised ``AttributeError: 'NoneType' object
has no attribute '__traceback__'``, the run never finished and closing the engine hung)."""
from __future__ import annotations

import os
import threading
import time

import dask
import pytest

import cleo_dask as cd


class BrokenBackoff(cd.Backoff):
    """A user's backoff with a bug: computing the delay raises (on the driver thread)."""

    def delay(self, attempt, rng=None):
        raise ZeroDivisionError("a broken backoff")


def flaky(agent) -> str:
    time.sleep(0.5)  # the independent node has finished by then (nodes still running when the run ends fail)
    raise ValueError("the service is down")


def report(agent, flaky: str) -> str:
    return f"report on {flaky}"


def independent(agent) -> str:
    return "fine"


def closes_promptly(engine: cd.Engine) -> bool:
    """Close ``engine`` in a thread; False if it is still closing a minute later (a hang)."""
    closer = threading.Thread(target=engine.close, daemon=True)
    closer.start()
    closer.join(60)
    return not closer.is_alive()


def test_an_exception_on_the_driver_ends_the_run_with_a_clear_error(client):
    engine = cd.Engine(client=client)
    wf = cd.Workflow("broken-backoff")
    wf.add(cd.task(flaky, retries=2, backoff=BrokenBackoff()), name="flaky")
    wf.add(report, after="flaky")
    wf.add(independent)
    run = engine.submit(wf)
    try:
        outcome = run.result(timeout=60)
        assert run.status() == "failed"
        for node in ("flaky", "report"):
            r = outcome[node]
            assert r.status == cd.Status.FAILED
            assert isinstance(r.error, cd.CleoError), r.error
            assert "ZeroDivisionError: a broken backoff" in str(r.error) and run.id in str(r.error)
        assert outcome["flaky"].attempts[0].error_type == "ValueError"  # the task's own failure, kept
        assert outcome["independent"].status == cd.Status.SUCCEEDED and outcome["independent"].value == "fine"
    finally:
        assert closes_promptly(engine)


def wait_then_fail_once(agent) -> str:
    flag = agent.config["flag"]
    if not os.path.exists(flag):
        open(flag, "w").close()
        raise ValueError("first attempt fails")
    return "second attempt"


def after(agent, wait_then_fail_once: str) -> str:
    return wait_then_fail_once + " and after"


def _clear_blamed_exception(failed_key, dependent_key, dask_scheduler=None):
    """What ``Scheduler.stimulus_retry`` does to a retried task (its exception is cleared), then
    the report of its still-erred dependent that a client gets when it asks again: ``task-erred``
    with no exception (``Future.exception()`` is then ``None``)."""
    dask_scheduler.tasks[failed_key].exception = None
    dask_scheduler.report_on_key(key=dependent_key)


@pytest.mark.slow
def test_an_erred_key_reported_without_an_exception_is_not_a_crash(engine, tmp_path):
    agent = cd.Agent("a", config={"flag": str(tmp_path / "failed-once")})
    wf = cd.Workflow.chain(cd.task(wait_then_fail_once, retries=1, backoff=cd.fixed(3)), after)
    with dask.config.set({"cleo_dask.hold-retries": False}):   # the client's retry: its keys err first
        run = engine.submit(wf, agent)
    futures = run.futures
    deadline = time.monotonic() + 30
    while not all(f.status == "error" for f in futures.values()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(f.status == "error" for f in futures.values()), "the first attempt did not fail in time"
    failed_key, dependent_key = futures["wait_then_fail_once"].key, futures["after"].key
    engine.client.run_on_scheduler(_clear_blamed_exception, failed_key, dependent_key)
    while futures["after"].exception() is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert futures["after"].status == "error" and futures["after"].exception() is None

    assert run._handle_erred(dependent_key) is False  # was: AttributeError on the driver thread
    outcome = run.result(timeout=60)
    assert outcome.ok and outcome["after"].value == "second attempt and after"
    assert len(outcome["wait_then_fail_once"].attempts) == 2


def test_a_driver_callback_that_raises_is_reported_to_its_owner():
    from cleo_dask.runs.driver import Driver
    seen = []
    done = threading.Event()
    driver = Driver()
    try:
        driver.call_soon(lambda: 1 / 0, on_error=lambda exc: (seen.append(exc), done.set()))
        driver.call_soon(lambda: seen.append("next"))  # the thread goes on
        assert done.wait(10)
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert isinstance(seen[0], ZeroDivisionError) and seen[1] == "next"
    finally:
        driver.close()


@pytest.mark.parametrize("fail_fast", [False, True])
def test_close_does_not_hang_on_a_run_ended_by_a_driver_error(client, fail_fast):
    engine = cd.Engine(client=client)
    run = engine.submit(cd.task(flaky, retries=1, backoff=BrokenBackoff()), fail_fast=fail_fast)
    assert run.wait(60) and run.status() == "failed"
    assert closes_promptly(engine)
