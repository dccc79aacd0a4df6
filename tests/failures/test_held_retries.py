"""Delayed retries held on the scheduler (issue 18, part 1): the key waits there for its backoff,
its dependents never err, and the outcome's attempts are those a client-side retry recorded."""
from __future__ import annotations

import random
import threading
import time

import dask
import pytest

import cleo_dask as cd
from cleo_dask.admission.plugin import admission_state
from cleo_dask.durable.journal import Journal
from cleo_dask.failures.hold import HeldRetries, holds_retries, retry_delay
from cleo_dask.failures.retry import RetryPolicy

CALLS: dict[str, int] = {}
LOCK = threading.Lock()


# -- the decisions, pure ---------------------------------------------------------------------------
def test_which_policies_are_held_on_the_scheduler():
    assert holds_retries(RetryPolicy(2, cd.fixed(0.5)))                       # a backoff
    assert holds_retries(RetryPolicy(2, retry_on=(ConnectionError,)))         # a filter Dask cannot apply
    assert not holds_retries(RetryPolicy(2))                                  # Dask's own retries=
    assert not holds_retries(RetryPolicy(0, cd.fixed(0.5)))                   # nothing to retry


def test_the_delay_before_the_next_attempt_follows_the_policy():
    policy = RetryPolicy(2, cd.exponential(first=1.0, factor=3.0), retry_on=(ConnectionError,))
    assert retry_delay(ConnectionError("down"), 1, policy) == 1.0
    assert retry_delay(ConnectionError("down"), 2, policy) == 3.0
    assert retry_delay(ConnectionError("down"), 3, policy) is None            # retries used up: final
    assert retry_delay(KeyError("bug"), 1, policy) is None                    # not retried on: final
    assert retry_delay(cd.Retry("slow down", delay=7), 1, policy) == 7.0      # the task asked for 7 s
    backoff = cd.exponential(first=1.0, jitter=0.5)
    jittered = RetryPolicy(1, backoff)
    assert retry_delay(ValueError(), 1, jittered, rng=random.Random(1)) == pytest.approx(
        backoff.delay(1, random.Random(1)))


def test_the_scheduler_book_holds_a_key_until_its_time_and_keeps_its_attempts():
    book = HeldRetries()
    now = 1000.0   # the clock is injected
    until, past = book.hold("k", 2.5, (1.0, 2.0, "w1", "ConnectionError('a')", "ConnectionError", False), now)
    assert until == 1002.5 and len(past) == 1 and book.is_held("k") and len(book) == 1
    assert book.released("k") and not book.is_held("k") and len(book) == 0
    until, past = book.hold("k", -1.0, (3.0, 4.0, "w2", "E", "E", False), now + 10)   # no negative wait
    assert until == 1010.0 and [r[2] for r in past] == ["w1", "w2"]            # every attempt so far
    book.forget("k")
    assert not book.is_held("k") and "k" not in book.history


# -- on a real cluster -----------------------------------------------------------------------------
class Flaky:
    """Fails its first ``fails`` attempts (counted in this process: the cluster is in-process)."""

    def __init__(self, fails, error=ConnectionError):
        self.fails, self.error, self.id = fails, error, f"flaky-{time.time_ns()}"

    @property
    def calls(self):
        return CALLS.get(self.id, 0)

    def run(self, agent, **inputs):
        with LOCK:
            CALLS[self.id] = n = CALLS.get(self.id, 0) + 1
        if n <= self.fails:
            raise self.error(f"attempt {n} failed")
        return f"ok after {n}"


def transitions_of(client, run_id):
    """``(key, start, finish)`` of every transition the scheduler logged for this run's keys."""
    return client.run_on_scheduler(
        lambda dask_scheduler: [(t[0], t[1], t[2]) for t in dask_scheduler.transition_log if run_id in str(t[0])])


def chain(flaky, **policy):
    """``first -> flaky -> second -> third``: the flaky node in the middle of a chain."""
    wf = cd.Workflow()
    wf.add(lambda agent: "in", name="first")
    wf.add(flaky, name="flaky", after=["first"], **policy)
    wf.add(lambda agent, flaky: flaky.upper(), name="second", after=["flaky"])
    wf.add(lambda agent, second: second + "!", name="third", after=["second"])
    return wf


def test_a_held_retry_never_errs_its_dependents(engine, client, agent):
    flaky = Flaky(2)
    run = engine.submit(chain(flaky, retries=3, backoff=cd.fixed(0.2)), agent)
    out = run.result(timeout=30)
    assert out.ok and out["third"].value == "OK AFTER 3!"
    r = out["flaky"]
    assert [a.error is not None for a in r.attempts] == [True, True, False]
    assert [a.number for a in r.attempts] == [1, 2, 3]
    assert r.attempts[1].start - r.attempts[0].end >= 0.19   # the backoff was waited out
    log = transitions_of(client, run.id)
    assert not [t for t in log if t[2] == "erred"]            # nothing erred: not the node, not below it
    held = [t for t in log if str(t[0]).endswith("-flaky") and t[2] == "no-worker"]
    assert len(held) == 2   # held twice, on no worker


def test_when_held_retries_run_out_the_fallback_and_on_error_follow_as_before(engine, client, agent):
    notified = []
    flaky = Flaky(99)
    run = engine.submit(chain(flaky, retries=2, backoff=cd.fixed(0.05), fallback=lambda agent, error, **kw: "spare",
                              on_error=lambda a, node, error: notified.append(node)), agent)
    out = run.result(timeout=30)
    r = out["flaky"]
    assert r.status == "fell_back" and out["third"].value == "SPARE!"
    assert [a.kind for a in r.attempts] == ["task", "task", "task", "fallback"]
    assert [a.error for a in r.attempts[:3]] == [f"ConnectionError('attempt {i} failed')" for i in (1, 2, 3)]
    assert flaky.calls == 3 and notified == ["flaky"]
    erred = [t[0] for t in transitions_of(client, run.id) if t[2] == "erred" and str(t[0]).endswith("-flaky")]
    assert len(erred) == 1   # the node's key erred once: at its final failure, as before


def test_an_error_retry_on_does_not_cover_fails_at_once(engine, client, agent):
    flaky = Flaky(1, error=KeyError)
    out = engine.submit(chain(flaky, retries=3, backoff=cd.fixed(0.05), retry_on=ConnectionError), agent).result(
        timeout=30)
    assert out["flaky"].status == "failed" and len(out["flaky"].attempts) == 1 and flaky.calls == 1
    assert out["second"].status == "upstream_failed"


def test_cancelling_a_run_drops_its_held_retry(engine, client, agent):
    flaky = Flaky(1)
    run = engine.submit(chain(flaky, retries=1, backoff=cd.fixed(30.0)), agent)
    deadline = time.time() + 20
    while admission_state(client).get("retries_held", 0) < 1 and time.time() < deadline:
        time.sleep(0.05)
    assert admission_state(client)["retries_held"] >= 1 and flaky.calls == 1   # held, on no worker
    run.cancel()
    out = run.result(timeout=10)
    assert out["flaky"].status == "cancelled" and out["third"].status == "cancelled"
    while admission_state(client).get("retries_held", 0) and time.time() < deadline:
        time.sleep(0.05)
    assert admission_state(client)["retries_held"] == 0                      # the key is gone from the book
    assert flaky.calls == 1 and not [t for t in transitions_of(client, run.id) if t[2] == "erred"]


def add_up(agent, **parents):
    return 1 + sum(v for v in parents.values() if isinstance(v, int))


def test_a_windowed_run_holds_its_retries_too(engine, client, agent):
    flaky = Flaky(1)
    wf = cd.Workflow("windowed")
    for d in range(12):
        for w in range(5):
            name = f"n{d}_{w}"
            after = [] if d == 0 else [f"n{d - 1}_{w}", f"n{d - 1}_{(w + 1) % 5}"]
            wf.add(flaky if name == "n1_2" else add_up, name=name, after=after, retries=1, backoff=cd.fixed(0.05))
    with dask.config.set({"cleo_dask.window.nodes": 20, "cleo_dask.window.first-nodes": 10}):
        run = engine.submit(wf, agent)
        out = run.result(timeout=60)
        assert run.window_stats()["sent"] >= 2
    assert out.ok and len(out["n1_2"].attempts) == 2 and flaky.calls == 2
    assert not [t for t in transitions_of(client, run.id) if t[2] == "erred"]


def test_a_durable_run_journals_every_held_attempt(client, agent, tmp_path):
    flaky = Flaky(2)
    with cd.Engine(client=client, store=tmp_path / "runs.db") as durable:
        run = durable.submit(chain(flaky, retries=2, backoff=cd.fixed(0.05)), agent)
        assert run.result(timeout=30).ok
        assert durable.durable.wait_journaled(run.id)
    rows = [r for r in Journal(tmp_path / "runs.db").attempts(run.id) if r[0] == "flaky"]
    assert [r[1] for r in rows] == [1, 2, 3]
    assert [r[6] for r in rows] == ["ConnectionError", "ConnectionError", None]


async def flaky_async(agent, first):
    with LOCK:
        CALLS["async"] = n = CALLS.get("async", 0) + 1
    if n == 1:
        raise ConnectionError("the first call fails")
    return n


def test_an_async_node_is_held_the_same_way(engine, client, agent):
    wf = cd.Workflow()
    wf.add(lambda agent: 0, name="first")
    wf.add(flaky_async, name="flaky", after=["first"], retries=1, backoff=cd.fixed(0.05))
    wf.add(lambda agent, flaky: flaky * 10, name="second", after=["flaky"])
    run = engine.submit(wf, agent)
    out = run.result(timeout=30)
    assert out["second"].value == 20 and len(out["flaky"].attempts) == 2
    assert not [t for t in transitions_of(client, run.id) if t[2] == "erred"]


def test_a_durable_run_whose_retry_was_held_when_its_engine_went_resumes(client, agent, tmp_path):
    flaky = Flaky(1)
    store = tmp_path / "runs.db"
    first = cd.Engine(client=client, store=store)
    try:
        run = first.submit(chain(flaky, retries=1, backoff=cd.fixed(60.0)), agent)
        deadline = time.time() + 20
        while admission_state(client).get("retries_held", 0) < 1 and time.time() < deadline:
            time.sleep(0.05)
        assert admission_state(client)["retries_held"] >= 1 and flaky.calls == 1
    finally:
        first.close()   # its client's side goes: the held key is dropped with the run's futures
    assert [r.id for r in Journal(store).runs(status="interrupted")] == [run.id]
    while admission_state(client).get("retries_held", 0) and time.time() < deadline:
        time.sleep(0.05)
    assert admission_state(client)["retries_held"] == 0
    with cd.Engine(client=client, store=store) as again:
        out = again.resume(run.id).result(timeout=30)
    assert out.ok and out["third"].value == "OK AFTER 2!" and flaky.calls == 2


def test_fail_fast_after_the_last_held_retry_cancels_the_rest(engine, client, agent):
    flaky = Flaky(99)
    wf = chain(flaky, retries=2, backoff=cd.fixed(0.05))
    wf.add(lambda agent: time.sleep(3), name="slow")   # still running at the final failure (its thread is kept 3 s)
    run = engine.submit(wf, agent, fail_fast=True)
    out = run.result(timeout=30)
    assert out["flaky"].status == "failed" and len(out["flaky"].attempts) == 3 and flaky.calls == 3
    assert out["slow"].status == "cancelled" and out["second"].status != "succeeded"


def test_a_held_retry_gives_back_its_agents_concurrency_lease(engine, client):
    limited = cd.Agent(f"limited-{time.time_ns()}", max_concurrency=1)
    flaky = Flaky(1)
    wf = cd.Workflow()
    wf.add(flaky, name="flaky", retries=1, backoff=cd.fixed(1.0))
    for i in range(3):
        wf.add(lambda agent: time.time(), name=f"other{i}")
    out = engine.submit(wf, limited).result(timeout=30)
    assert out.ok and len(out["flaky"].attempts) == 2
    # the others ran while the retry waited: the lease was not held through the backoff
    assert max(out[f"other{i}"].value for i in range(3)) < out["flaky"].attempts[1].start


def test_the_book_counts_an_erred_attempt_without_reporting_it_twice():
    book = HeldRetries()
    past = book.erred("k", ())   # a lost worker's attempt: the client recorded it, and retries the key
    until, past = book.hold("k", 1.0, (1.0, 2.0, "w", "E", "E", False), 0.0)
    assert past == [None, (1.0, 2.0, "w", "E", "E", False)]   # two failed attempts so far, one record


def kills_then_fails(agent):
    import os
    import signal
    marker = agent.config["marker"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    raise ConnectionError("the service is down")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_lost_attempt_counts_toward_the_retries_held_after_it(tmp_path):
    # the first attempt kills its worker (KilledWorker at once: the client retries it after the
    # backoff), the second raises: with retries=1 that was the last attempt, as before
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            cd.Engine(n_workers=1, threads_per_worker=1, processes=True) as engine:
        wf = cd.Workflow()
        wf.add(kills_then_fails, retries=1, backoff=cd.fixed(0.2))
        out = engine.submit(wf, cd.Agent("a", config={"marker": str(tmp_path / "killed")})).result(timeout=120)
    node = out["kills_then_fails"]
    assert node.status == "failed" and len(node.attempts) == 2
    assert node.attempts[0].crashed and node.attempts[1].error_type == "ConnectionError"


def test_on_a_queuing_scheduler_a_slot_handed_back_for_a_retry_is_refilled_at_once(agent):
    # one slot, Dask's default worker-saturation (queuing): the two failing tasks go first, are held
    # for 3 s and hand their slots back; the queue must refill them at once, not at the next event
    # (which here would be the end of the hold)
    from distributed import Client, LocalCluster
    flakies = [Flaky(1) for _ in range(2)]
    wf = cd.Workflow()
    for i, f in enumerate(flakies):
        wf.add(f, name=f"f{i}", retries=1, backoff=cd.fixed(3.0))
    for i in range(3):
        wf.add(lambda agent: (time.time(), time.sleep(0.2))[0], name=f"w{i}")
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.1}):
        lc = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0")
    with lc, Client(lc, set_as_default=False) as client, cd.Engine(client=client) as engine:
        t0 = time.time()
        out = engine.submit(wf, agent).result(timeout=60)
        firsts = sorted(out[f"f{i}"].attempts[0].start - t0 for i in range(2))
        starts = sorted(out[f"w{i}"].value - t0 for i in range(3))
        assert firsts[-1] < starts[0]            # the failing tasks took the slot first
        assert starts[-1] < 2.0                  # and the others did not wait for the holds to end
        assert all(out[f"f{i}"].value == "ok after 2" for i in range(2))


def test_on_a_queuing_scheduler_a_released_retry_waits_in_dasks_queue_for_a_free_slot(agent):
    # one slot kept busy by 0.2 s tasks: the retry released after its 0.5 s backoff joins Dask's
    # queue (handed to the next free slot by priority), it is not pushed onto the busy worker
    from distributed import Client, LocalCluster
    flaky = Flaky(1)
    wf = cd.Workflow()
    wf.add(flaky, name="flaky", retries=1, backoff=cd.fixed(0.5))
    for i in range(8):
        wf.add(lambda agent: time.sleep(0.2), name=f"w{i}")
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.1}):
        lc = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0")
    with lc, Client(lc, set_as_default=False) as client, cd.Engine(client=client) as engine:
        run = engine.submit(wf, agent)
        assert run.result(timeout=60)["flaky"].value == "ok after 2"
        log = transitions_of(client, run.id)
    mine = [(start, finish) for key, start, finish in log if str(key).endswith("-flaky")]
    held = mine.index(("waiting", "no-worker"))
    assert ("no-worker", "released") in mine[held:] and ("waiting", "queued") in mine[held:]
