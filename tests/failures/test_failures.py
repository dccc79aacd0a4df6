"""Failure handling on real clusters: retries, backoff, fallbacks, trigger rules, timeouts, worker loss."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import cleo_dask as cd


CALLS: dict[str, int] = {}       # attempts per Flaky, shared by the in-process workers
CALLS_LOCK = threading.Lock()


class Flaky:
    """A task object that fails its first ``fails`` attempts (counted in this process)."""

    def __init__(self, fails, error=ConnectionError, name="flaky"):
        self.fails = fails
        self.error = error
        self.name = name
        self.id = f"{name}-{time.time_ns()}"

    @property
    def calls(self):
        return CALLS.get(self.id, 0)

    def run(self, agent, **inputs):
        with CALLS_LOCK:
            CALLS[self.id] = n = CALLS.get(self.id, 0) + 1
        if n <= self.fails:
            raise self.error(f"attempt {n} failed")
        return f"ok after {n}"


class SlowFlaky(Flaky):
    """A :class:`Flaky` whose every attempt first takes ``seconds``."""

    def __init__(self, fails, seconds, **kwargs):
        super().__init__(fails, **kwargs)
        self.seconds = seconds

    def run(self, agent, **inputs):
        time.sleep(self.seconds)
        return super().run(agent, **inputs)


def polite(agent):
    with CALLS_LOCK:
        CALLS["polite"] = n = CALLS.get("polite", 0) + 1
    if n < 2:
        raise cd.Retry("rate limited", delay=0.1)
    return n


@cd.task(timeout=0.3, retries=1, retry_on=TimeoutError)
def slow(agent):
    with CALLS_LOCK:
        CALLS["slow"] = n = CALLS.get("slow", 0) + 1
    CALLS["deadline"] = cd.deadline()
    time.sleep(6 if n == 1 else 0)
    return "second time lucky"


def test_a_flaky_task_is_retried_with_backoff_until_it_succeeds(engine, agent):
    flaky = Flaky(2)
    wf = cd.Workflow()
    wf.add(flaky, retries=3, backoff=cd.fixed(0.2), retry_on=(ConnectionError,))
    wf.add(lambda agent, flaky: flaky.upper(), name="after", after=["flaky"])
    out = engine.submit(wf, agent).result(timeout=30)
    r = out["flaky"]
    assert r.status == "succeeded" and r.value == "ok after 3"
    assert [a.error is not None for a in r.attempts] == [True, True, False]
    assert r.attempts[1].start - r.attempts[0].end >= 0.19   # the backoff was waited out
    assert out["after"].value == "OK AFTER 3"


def test_immediate_retries_use_dasks_own_retries_and_are_all_recorded(engine, agent):
    flaky = Flaky(2)
    wf = cd.Workflow()
    wf.add(flaky, retries=2)   # no backoff, any exception: Dask's retries=
    run = engine.submit(wf, agent)
    r = run.result(timeout=30)["flaky"]
    assert r.status == "succeeded" and flaky.calls == 3
    assert len(r.attempts) == 3 and [a.number for a in r.attempts] == [1, 2, 3]


def test_an_unlisted_exception_fails_at_once(engine, agent):
    flaky = Flaky(1, error=KeyError)
    wf = cd.Workflow()
    wf.add(flaky, retries=5, backoff=cd.fixed(0.1), retry_on=(TimeoutError, ConnectionError))
    r = engine.submit(wf, agent).result(timeout=30)["flaky"]
    assert r.status == "failed" and isinstance(r.error, KeyError)
    assert flaky.calls == 1 and len(r.attempts) == 1


def test_a_task_can_ask_for_a_retry(engine, agent):
    r = engine.run(cd.task(retries=1, retry_on=KeyError)(polite), agent)
    assert r.value == 2


def test_the_fallback_stands_in_and_its_value_flows_downstream(engine, agent):
    def cached_answer(agent, error, **inputs):
        return f"cached ({type(error).__name__})"

    calls = []

    @cd.task(retries=1, backoff=cd.fixed(0.05), fallback=cached_answer, on_error=lambda a, n, e: calls.append((a.id, n, e)))
    def call_api(agent):
        raise ConnectionError("api down")

    wf = cd.Workflow()
    wf.add(call_api)
    wf.add(lambda agent, call_api: f"report: {call_api}", name="report", after=["call_api"])
    out = engine.submit(wf, agent).result(timeout=30)
    assert out["call_api"].status == "fell_back" and out["call_api"].fallback_used
    assert out["call_api"].value == "cached (ConnectionError)"
    assert len(out["call_api"].attempts) >= 2
    assert out["report"].value == "report: cached (ConnectionError)"
    assert out["report"].upstream_fallbacks == ("call_api",)
    assert [(a, n, type(e).__name__) for a, n, e in calls] == [("researcher-1", "call_api", "ConnectionError")]


def test_a_fallback_receives_the_runs_inputs_too(engine, agent):
    def cached(agent, error, city):
        return f"cached weather for {city}"

    @cd.task(fallback=cached)
    def weather(agent, city):
        raise ConnectionError("api down")

    r = engine.run(weather, agent, city="Paris")
    assert r.status == "fell_back" and r.value == "cached weather for Paris"


def test_a_failing_fallback_is_a_final_failure(engine, agent):
    def broken_fallback(agent, error):
        raise RuntimeError("fallback broke too")

    @cd.task(fallback=broken_fallback)
    def call_api(agent):
        raise ConnectionError("api down")

    wf = cd.Workflow()
    wf.add(call_api)
    wf.add(lambda agent, call_api: 1, name="next", after=["call_api"])
    out = engine.submit(wf, agent).result(timeout=30)
    assert out["call_api"].status == "failed"
    assert out["next"].status == "upstream_failed" and "call_api" in out["next"].reason


def test_the_fallbacks_own_run_is_the_last_attempt_marked_fallback(engine, agent):
    def cached_answer(agent, error):
        return "cached"

    def broken_fallback(agent, error):
        raise RuntimeError("fallback broke too")

    def api_down(agent):
        raise ConnectionError("api down")

    wf = cd.Workflow()
    wf.add(api_down, name="rescued", retries=2, backoff=cd.fixed(0.01), fallback=cached_answer)
    wf.add(api_down, name="unrescued", fallback=broken_fallback)
    out = engine.submit(wf, agent).result(timeout=30)
    rescued = out["rescued"].attempts
    assert len(rescued) == 2 + 2   # retries + the first attempt + the fallback's run
    assert [a.kind for a in rescued] == ["task", "task", "task", "fallback"]
    assert rescued[-1].error is None and all(a.error_type == "ConnectionError" for a in rescued[:-1])
    unrescued = out["unrescued"].attempts
    assert [(a.kind, a.error_type) for a in unrescued] == [("task", "ConnectionError"), ("fallback", "RuntimeError")]
    # an Attempt built as before (positionally, without kind) is still a task attempt
    assert cd.Attempt(1, 0.0, 1.0, "w").kind == "task"


def test_trigger_rules(engine, agent):
    def boom(agent):
        raise ValueError("boom")

    wf = cd.Workflow()
    wf.add(lambda agent: 1, name="a")
    wf.add(boom, name="b")
    wf.add(lambda agent, a, b: "never", name="needs_both", after=["a", "b"])
    wf.add(lambda agent, a, b: (a, type(b).__name__, b.node, repr(b.error)), name="cleanup", after=["a", "b"],
           trigger="all_done")
    wf.add(lambda agent, a, b: "alert sent", name="alert", after=["a", "b"], trigger="one_failed")
    wf.add(lambda agent, a: "quiet", name="no_alert", after=["a"], trigger="one_failed")
    wf.add(lambda agent, needs_both: 1, name="grandchild", after=["needs_both"])
    run = engine.submit(wf, agent)
    out = run.result(timeout=30)
    assert out["b"].status == "failed"
    assert out["needs_both"].status == "upstream_failed" and out["needs_both"].reason == "upstream 'b' failed"
    # below a node that was itself upstream_failed: the failing ancestor is still the one named
    assert out["grandchild"].status == "upstream_failed"
    assert out["grandchild"].reason == "upstream 'b' failed (via 'needs_both')"
    assert out["cleanup"].value == (1, "Failure", "b", "ValueError('boom')")
    assert out["alert"].value == "alert sent"
    assert out["no_alert"].status == "skipped"   # skipped by its rule, not by a failure
    assert run.status() == "failed"
    assert out.counts() == {"succeeded": 3, "failed": 1, "upstream_failed": 2, "skipped": 1}


def test_a_later_failure_upstream_does_not_run_again_what_an_earlier_one_settled(engine, agent):
    # ``quick`` fails first: ``gate`` (all_success) is upstream_failed at once, and ``cleanup``
    # (all_done) starts with a Failure for it.  ``slow`` fails while ``cleanup`` still runs, above
    # ``gate`` too: ``gate`` is settled, so nothing below it may start again (``cleanup``, whose one
    # allowed attempt fails, would otherwise come back "succeeded" from a second).
    cleanup = SlowFlaky(1, seconds=1.5, error=RuntimeError, name="cleanup")

    def slow_boom(agent):
        time.sleep(0.5)
        raise ValueError("slow")

    def quick_boom(agent):
        raise ValueError("quick")

    wf = cd.Workflow()
    wf.add(slow_boom, name="slow")
    wf.add(quick_boom, name="quick")
    wf.add(lambda agent, slow, quick: "never", name="gate", after=["slow", "quick"])
    wf.add(cleanup, after=["gate"], trigger="all_done")
    out = engine.submit(wf, agent).result(timeout=30)
    assert out["gate"].status == "upstream_failed"
    assert out["cleanup"].status == "failed" and cleanup.calls == 1
    assert len(out["cleanup"].attempts) == 1


@pytest.mark.slow
def test_fail_fast_cancels_what_is_left(engine, agent):
    def boom(agent):
        raise ValueError("boom")

    wf = cd.Workflow()
    wf.add(boom, name="b")
    wf.add(lambda agent: time.sleep(1.5) or 1, name="slow")
    wf.add(lambda agent, slow: slow, name="after_slow", after=["slow"])
    run = engine.submit(wf, agent, fail_fast=True)
    out = run.result(timeout=30)
    assert out["b"].status == "failed"
    assert out["after_slow"].status == "cancelled"
    t0 = time.time()
    run2 = engine.submit(wf, agent, fail_fast=False)
    out2 = run2.result(timeout=30)
    assert out2["after_slow"].value == 1 and time.time() - t0 >= 1.4


def test_a_timeout_fails_the_attempt_and_the_run_moves_on(engine, agent):
    t0 = time.time()
    r = engine.run(slow, agent)
    assert r.value == "second time lucky"
    assert r.attempts[0].timed_out and "TaskTimeout" in r.attempts[0].error_type
    assert CALLS["deadline"] is not None and time.time() - t0 < 5   # did not wait for the 6 s body

    @cd.task(timeout=0.2)
    def hopeless(agent):
        time.sleep(1)

    r = engine.run(hopeless, agent)
    assert r.status == "failed" and isinstance(r.error, cd.TaskTimeout)


def test_a_backoff_holds_no_worker_slot(engine, agent):
    """2 slots; one task waits 1.5 s between attempts while four 0.3 s tasks use both slots."""
    flaky = Flaky(1)
    wf = cd.Workflow()
    wf.add(flaky, retries=1, backoff=cd.fixed(1.5), retry_on=ConnectionError)
    for i in range(4):
        wf.add(lambda agent: (time.time(), time.sleep(0.3))[0], name=f"work{i}")
    t0 = time.time()
    out = engine.submit(wf, agent).result(timeout=30)
    assert out["flaky"].value == "ok after 2"
    starts = sorted(out[f"work{i}"].value - t0 for i in range(4))
    # all four ran on the two slots while the retry waited: done well before the backoff ended
    assert starts[-1] < 1.2
    assert out["flaky"].attempts[1].start - t0 >= 1.5


def test_engine_defaults_apply_to_tasks_that_set_none(client, agent):
    flaky = Flaky(1)
    with cd.Engine(client=client, default_retries=2, default_backoff=cd.fixed(0.05)) as engine:
        r = engine.run(flaky, agent)
    assert r.value == "ok after 2" and len(r.attempts) == 2
    with pytest.raises(cd.WorkflowError):
        cd.Engine(client=client, default_retries=-1)


def test_a_fallback_inside_a_fused_chain_keeps_what_already_ran(engine, agent):
    first = Flaky(0, name="first")
    wf = cd.Workflow()
    wf.add(first)
    wf.add(lambda agent, first: 1 / 0, name="middle", after=["first"],
           fallback=lambda agent, error, first: f"fallback after {first}")
    wf.add(lambda agent, middle: middle + "!", name="last", after=["middle"])
    run = engine.submit(wf, agent)
    assert len(run._units) == 1   # the three nodes (none retries) run as one Dask task
    out = run.result(timeout=30)
    assert out["middle"].status == "fell_back"
    assert out["last"].value == "fallback after ok after 1!"
    assert first.calls == 1       # the node before the failure did not run again


def test_retried_nodes_are_not_fused_and_their_children_wait(engine, agent):
    flaky = Flaky(1, name="middle")
    wf = cd.Workflow()
    wf.add(lambda agent: 1, name="first")
    wf.add(flaky, after=["first"], retries=1, backoff=cd.fixed(0.05), retry_on=ConnectionError)
    wf.add(lambda agent, middle: middle + "!", name="last", after=["middle"])
    run = engine.submit(wf, agent)
    assert len(run._units) == 3
    out = run.result(timeout=30)
    assert out["first"].value == 1 and out["last"].value == "ok after 2!"
    assert len(out["middle"].attempts) == 2 and len(out["first"].attempts) == 1


def test_independent_failures_in_a_wide_dag_are_all_handled(engine, agent):
    flakies = [Flaky(1, name=f"f{i}") for i in range(6)]
    wf = cd.Workflow()
    for f in flakies:
        wf.add(f, retries=2, backoff=cd.fixed(0.1), retry_on=ConnectionError)
    wf.add(lambda agent, **inputs: sorted(inputs.values()), name="join", after=[f.name for f in flakies])
    out = engine.submit(wf, agent).result(timeout=30)
    assert out["join"].value == ["ok after 2"] * 6


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_killed_worker_process_does_not_lose_the_run(tmp_path):
    marker = tmp_path / "started"

    def victim(agent):
        import pathlib
        path = pathlib.Path(agent.config["marker"])
        if not path.exists():
            path.write_text(str(os.getpid()))
            time.sleep(30)   # killed during this sleep
        return os.getpid()

    with cd.Engine(n_workers=2, processes=True) as engine:
        wf = cd.Workflow()
        wf.add(victim)
        wf.add(lambda agent, victim: victim, name="after", after=["victim"])
        run = engine.submit(wf, cd.Agent("a", config={"marker": str(marker)}))
        for _ in range(300):
            if marker.exists() and marker.read_text():
                break
            time.sleep(0.05)
        os.kill(int(marker.read_text()), signal.SIGKILL)
        out = run.result(timeout=120)
        assert out["victim"].status == "succeeded"
        assert out["victim"].value != int(marker.read_text())
        assert out["after"].value == out["victim"].value
        assert out["victim"].worker_losses == 1
        assert len(out["victim"].attempts) == 1   # a lost worker is not an exception retry


def kills_its_worker(agent):
    """Kills its own worker process on its first ``kills`` attempts (counted in a marker file)."""
    import pathlib
    marker = pathlib.Path(agent.config["marker"])
    n = len(marker.read_text()) if marker.exists() else 0
    marker.write_text("x" * (n + 1))
    if n < agent.config["kills"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return n + 1


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_task_that_kills_its_worker_is_retried_by_its_policy(tmp_path):
    # Dask gives up on a task after allowed-failures + 1 lost workers (KilledWorker): 0 here, so
    # at the first loss.  The node's own retries and backoff then apply, and the losses are counted.
    import dask
    from distributed.scheduler import KilledWorker

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            cd.Engine(n_workers=1, threads_per_worker=1, processes=True) as engine:
        for kills, expected in ((1, "succeeded"), (5, "failed")):
            wf = cd.Workflow()
            wf.add(kills_its_worker, retries=1, backoff=cd.fixed(0.2))
            wf.add(lambda agent, kills_its_worker: kills_its_worker, name="after", after=["kills_its_worker"])
            agent = cd.Agent("a", config={"marker": str(tmp_path / f"kills-{kills}"), "kills": kills})
            run = engine.submit(wf, agent)
            out = run.result(timeout=120)
            node = out["kills_its_worker"]
            assert node.status == expected, node.error
            assert node.worker_losses == (1 if kills == 1 else 2)
            assert len(node.attempts) == 2 and node.attempts[0].crashed
            if kills == 1:
                assert node.value == 2 and out["after"].value == 2
            else:
                assert isinstance(node.error, KilledWorker) and out["after"].status == "upstream_failed"
            run.release()  # its results must not be recomputed when the next run kills the worker


def test_the_run_announces_its_end_when_a_failure_overtakes_a_slower_sibling(engine, agent):
    # the sink errs (its parent failed) while its other parent still runs: the run must still
    # tell its listeners (journal, monitor) that it finished, once that sibling is done
    ended = threading.Event()
    wf = cd.Workflow("race")
    wf.add(lambda agent: time.sleep(1.0) or "late", name="slow_sibling")
    wf.add(lambda agent: 1 / 0, name="fails_at_once")
    wf.add(lambda agent, slow_sibling, fails_at_once: "never", name="sink", after=["slow_sibling", "fails_at_once"])
    seen = []
    engine.add_listener(lambda kind, run: (seen.append((kind, run.id)), kind == "finished" and ended.set()))
    run = engine.submit(wf, agent)
    out = run.result(timeout=30)
    assert out["slow_sibling"].value == "late" and out["sink"].status == "upstream_failed"
    assert ended.wait(10), "the run's end was never announced"
    assert ("finished", run.id) in seen
