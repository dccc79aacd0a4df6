"""I/O-bound agents (issue 6): async tasks, io_bound tasks, per-agent concurrency, rate limits and
fair share, on real clusters.  Tasks return their own (start, end) times; limits are checked
from those, so the checks hold however the work was spread over the workers."""
from __future__ import annotations

import asyncio
import time
import warnings

import pytest
from distributed import Client, LocalCluster

import cleo_dask as cd
from benchmarks.io_agents import max_in_flight as in_flight   # the benchmark's own measure
from cleo_dask.admission.cluster_needs import ClusterWarning, needs_io, problems
from cleo_dask.admission.fair import STEP
from cleo_dask.admission.ratelimit import Rate, next_start, parse_rate


# the session's `cluster` / `client` fixtures (conftest.py): 2 in-process workers x 1 thread, with
# the scheduler settings the engine gives its own clusters



async def wait_a_bit(agent, **inputs):
    start = time.time()
    await asyncio.sleep(0.1)
    return start, time.time()


def block_a_bit(agent, **inputs):
    start = time.time()
    time.sleep(0.1)
    return start, time.time()


def many(task, n, prefix="t"):
    wf = cd.Workflow()
    for i in range(n):
        wf.add(task, name=f"{prefix}{i}")
    return wf


def least_squares_slope(ys):
    n = len(ys)
    mx, my = (n - 1) / 2, sum(ys) / n
    return sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sum((i - mx) ** 2 for i in range(n))


def intervals(outcome):
    return [r.value for r in outcome.values()]


# -- pure logic ---------------------------------------------------------------------------------
def test_rate_limits_parse():
    assert parse_rate("60/m") == Rate(60, 60)
    assert parse_rate("100/s") == Rate(100, 1)
    assert parse_rate("1/10s").interval == 10
    assert parse_rate("5 / min") == Rate(5, 60)
    assert parse_rate(2) == Rate(2, 1)
    for bad in ("abc", "0/s", "-1/s", "10/fortnight", "", None, True, 0):
        with pytest.raises(cd.WorkflowError, match="rate_limit"):
            parse_rate(bad)


def test_spacing_keeps_the_average_rate_when_starts_come_late():
    due, starts = None, []
    now = 0.0
    while len(starts) < 101:
        ok, due2 = next_start(due, now, 0.1)
        if ok:
            starts.append(now)
            due = due2
        now = (due if not ok else now) + 0.013  # every wake-up 13 ms late
    assert 99.0 <= (len(starts) - 1) / (starts[-1] - starts[0]) * 10 <= 101.0  # 10/s on average
    assert next_start(5.0, 100.0, 0.1) == (True, 100.1)  # idle: restart from now, no burst


def test_never_more_than_count_in_a_window_even_when_catching_up():
    from collections import deque
    from cleo_dask.admission.ratelimit import window_allows
    rate, recent, due, starts = Rate(10, 1.0), deque(), None, []
    now = 0.0
    while len(starts) < 40:
        ok, due2 = next_start(due, now, rate.interval)
        if ok:
            ok, _ = window_allows(recent, now, rate)
        if ok:
            starts.append(now)
            recent.append(now)
            due = due2
        now += 0.7 if len(starts) == 5 and now < 1 else 0.01  # one long stall, then a busy loop
    assert max(sum(a <= s < a + 1.0 for s in starts) for a in starts) <= 10
    assert (len(starts) - 1) / (starts[-1] - starts[0]) == pytest.approx(10, rel=0.1)


def test_bad_limits_are_workflow_errors():
    with pytest.raises(cd.WorkflowError, match="rate_limit"):
        cd.task(rate_limit="abc")(block_a_bit)
    with pytest.raises(cd.WorkflowError, match="rate_limit"):
        cd.task(rate_limit="0/s")(block_a_bit)
    with pytest.raises(cd.WorkflowError, match="max_concurrency"):
        cd.Agent("a", max_concurrency=0)

    async def async_fallback(agent, error):
        return 0

    with pytest.raises(cd.WorkflowError, match="fallback"):
        cd.task(fallback=async_fallback)(block_a_bit)


def test_fair_share_ranks_roots_below_user_priorities(agent):
    from cleo_dask.core.compile import compile_workflow
    wf = many(block_a_bit, 3)
    wf.add(block_a_bit, name="after", after=["t0", "t1"])
    compiled = compile_workflow(wf, "r1", agent, priority=5)
    key = {n: k for n, (k, _) in compiled.location.items()}
    assert [compiled.priority[key[f"t{i}"]] for i in range(3)] == [5, 5 - STEP, 5 - 2 * STEP]
    assert compiled.priority.get(key["after"], 5) == 5  # only roots are ranked
    assert 1_000_000 * STEP <= 1e-3


# -- async tasks --------------------------------------------------------------------------------
CALLS: dict[str, int] = {}  # in-process cluster: the workers see this module's globals


class Flaky:
    """An async task that fails its first ``n`` calls."""

    def __init__(self, name, n):
        self.name, self.n = name, n
        CALLS[name] = 0

    async def __call__(self, agent):
        CALLS[self.name] += 1
        await asyncio.sleep(0.01)
        if CALLS[self.name] <= self.n:
            raise ConnectionError(f"call {CALLS[self.name]}")
        return "answer"


def test_async_tasks_retry_with_backoff(engine, agent):
    ask = cd.task(Flaky("ask", 2), name="ask", retries=3, backoff=cd.fixed(0.05), retry_on=(ConnectionError,))
    result = engine.run(ask, agent, timeout=30)
    assert result.status == "succeeded" and result.value == "answer"
    assert [a.error is not None for a in result.attempts] == [True, True, False]


CANCELLED: list[str] = []


async def too_slow(agent):
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        CANCELLED.append("cancelled")  # in-process cluster: this module's list
        raise
    return "late"


def test_async_timeout_cancels_the_coroutine_and_the_fallback_runs(engine, agent):
    async def cached_answer(agent, error):
        return f"cached ({type(error).__name__})"

    CANCELLED.clear()
    slow = cd.task(too_slow, timeout=0.2, fallback=cached_answer)
    t0 = time.time()
    result = engine.run(slow, agent, timeout=30)
    assert time.time() - t0 < 5
    assert result.status == "fell_back" and result.value == "cached (TaskTimeout)"
    assert result.attempts[0].timed_out
    assert CANCELLED == ["cancelled"]


def test_async_and_io_bound_tasks_do_not_hold_the_two_slots(engine, agent):
    # the session cluster has 2 workers x 1 thread: 2 slots
    for task in (cd.task(wait_a_bit), cd.task(block_a_bit, io_bound=True)):
        outcome = engine.submit(many(task, 20), agent).result(timeout=60)
        assert {r.status for r in outcome.values()} == {"succeeded"}
        assert in_flight(intervals(outcome)) >= 10
    # plain sync tasks still run two at a time
    outcome = engine.submit(many(cd.task(block_a_bit), 6), agent).result(timeout=60)
    assert in_flight(intervals(outcome)) <= 2


def test_io_bound_timeout_abandons_the_body(engine, agent):
    def stuck(agent):
        time.sleep(1.0)

    result = engine.run(cd.task(stuck, io_bound=True, timeout=0.1), agent, timeout=30)
    assert result.status == "failed" and isinstance(result.error, cd.TaskTimeout)


# -- cluster-wide limits ------------------------------------------------------------------------
def test_max_concurrency_holds_across_two_workers(engine):
    agent = cd.Agent("limited", max_concurrency=3)
    outcome = engine.submit(many(cd.task(wait_a_bit), 18), agent).result(timeout=60)
    assert in_flight(intervals(outcome)) == 3
    assert len({r.worker for r in outcome.values()}) == 2


def test_max_concurrency_holds_across_two_clients(cluster, engine):
    agent = cd.Agent("shared-api-key", max_concurrency=2)
    with Client(cluster, set_as_default=False) as other_client, cd.Engine(client=other_client) as other:
        runs = [engine.submit(many(cd.task(wait_a_bit), 8, "a"), agent),
                other.submit(many(cd.task(wait_a_bit), 8, "b"), agent)]
        spans = [iv for run in runs for iv in intervals(run.result(timeout=60))]
    assert len(spans) == 16 and in_flight(spans) == 2


def block_longer(agent, **inputs):
    start = time.time()
    time.sleep(0.5)
    return start, time.time()


@pytest.mark.slow
def test_tasks_waiting_for_a_lease_hold_no_slot(engine):
    # 4 sync tasks of a limit-1 agent: one runs on a slot, three wait in the scheduler (a
    # semaphore inside the task would have them sit on the other slot); so another agent's
    # tasks run at once on the free slot
    busy = engine.submit(many(cd.task(block_longer), 4), cd.Agent("one-at-a-time", max_concurrency=1))
    time.sleep(0.1)
    t0 = time.time()
    quick = engine.submit(many(cd.task(block_a_bit), 2), cd.Agent("other")).result(timeout=60)
    assert max(e for _, e in intervals(quick)) - t0 < 1.5  # the busy agent needs 2 s
    assert in_flight(intervals(busy.result(timeout=60))) == 1


@pytest.mark.slow
def test_rate_limit_holds_within_ten_percent(engine, agent):
    search = cd.task(wait_a_bit, rate_limit="20/s")
    outcome = engine.submit(many(search, 30), agent).result(timeout=60)
    starts = sorted(s for s, _ in intervals(outcome))
    slope = least_squares_slope(starts)  # seconds per start, robust to one late start
    assert 18 <= 1 / slope <= 22


@pytest.mark.parametrize("backoff", [cd.fixed(0.05), None], ids=["engine-retry", "dask-retries"])
def test_retried_task_takes_a_new_lease(engine, backoff):
    agent = cd.Agent(f"retrying-{backoff is None}", max_concurrency=1)
    name = f"flaky-{backoff is None}"
    flaky = cd.task(Flaky(name, 1), name=name, retries=2, backoff=backoff)
    outcome = engine.submit(flaky, agent).result(timeout=30)
    assert outcome[name].status == "succeeded"
    outcome = engine.submit(many(cd.task(wait_a_bit), 3), agent).result(timeout=30)  # the lease came back
    assert in_flight(intervals(outcome)) == 1


def test_cancelling_waiting_tasks_returns_nothing_borrowed(engine, client):
    from cleo_dask.admission.plugin import admission_state as snapshot
    agent = cd.Agent("cancelled", max_concurrency=1)
    run = engine.submit(many(cd.task(wait_a_bit), 5), agent)
    time.sleep(0.05)
    run.cancel()
    run.wait(timeout=30)
    outcome = engine.submit(many(cd.task(wait_a_bit), 2), agent).result(timeout=30)
    assert {r.status for r in outcome.values()} == {"succeeded"}
    deadline = time.time() + 5
    while snapshot(client)["running"].get("agent:cancelled") and time.time() < deadline:
        time.sleep(0.05)
    assert snapshot(client)["running"]["agent:cancelled"] == 0


# -- fairness -----------------------------------------------------------------------------------
def short(agent, **inputs):
    start = time.time()
    time.sleep(0.002)
    return start, time.time()


@pytest.mark.slow
def test_a_small_agent_is_not_stuck_behind_a_big_backlog(engine):
    big = engine.submit(many(cd.task(short), 500), cd.Agent("big"))
    small = engine.submit(many(cd.task(short), 5), cd.Agent("small"))
    small_done = max(e for _, e in intervals(small.result(timeout=120)))
    big_ends = sorted(e for _, e in intervals(big.result(timeout=120)))
    assert sum(e < small_done for e in big_ends) < 100  # well before the backlog is through


def test_priority_still_wins_over_fair_share(engine):
    limited = cd.Agent("prio", max_concurrency=1)
    low = engine.submit(many(cd.task(wait_a_bit), 4, "low"), limited, priority=0)
    high = engine.submit(many(cd.task(wait_a_bit), 4, "high"), limited, priority=5)
    low_starts = sorted(s for s, _ in intervals(low.result(timeout=60)))
    high_starts = sorted(s for s, _ in intervals(high.result(timeout=60)))
    # at most the one task already admitted before `high` arrived runs ahead of it
    assert sum(s < high_starts[-1] for s in low_starts) <= 1


# -- cluster settings ---------------------------------------------------------------------------
def test_engine_clusters_do_not_queue_and_others_are_warned_about():
    with cd.Engine(processes=False, n_workers=1) as engine:
        assert engine.cluster.scheduler.WORKER_SATURATION == float("inf")
        assert problems(engine.client) == []
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as plain, \
            Client(plain, set_as_default=False) as c:
        assert "worker-saturation" in problems(c)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("error", ClusterWarning)   # connecting, and runs of plain tasks: no warning
            with cd.Engine(client=c) as engine:
                assert engine.run(block_a_bit).ok
        with cd.Engine(client=c) as engine:
            with pytest.warns(ClusterWarning, match="worker-saturation"):   # a run that needs it: once
                engine.submit(many(cd.task(wait_a_bit), 2)).result(timeout=30)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ClusterWarning)   # not again for this cluster, from any engine
            with cd.Engine(client=c) as engine:
                engine.submit(many(cd.task(block_a_bit, io_bound=True), 2)).result(timeout=30)
                engine.submit(cd.task(block_a_bit), cd.Agent("few", max_concurrency=1)).result(timeout=30)


def test_which_runs_need_an_io_ready_cluster():
    assert not needs_io(many(cd.task(block_a_bit), 2), cd.Agent("a"))
    assert needs_io(many(cd.task(wait_a_bit), 1), cd.Agent("a"))
    assert needs_io(many(cd.task(block_a_bit, io_bound=True), 1), cd.Agent("a"))
    assert needs_io(many(cd.task(block_a_bit, rate_limit="5/s"), 1), cd.Agent("a"))
    assert needs_io(many(cd.task(block_a_bit), 1), cd.Agent("a", max_concurrency=2))


# -- benchmark smoke ----------------------------------------------------------------------------
@pytest.mark.benchmark
def test_io_agents_benchmark_runs_tiny(client):
    from benchmarks import io_agents
    rows = io_agents.run(client, tiny=True)
    names = {r["scenario"] for r in rows}
    assert {"async", "io_bound", "max_concurrency", "rate_limit"} <= names
    assert all(r["makespan_s"] > 0 for r in rows)


# -- not-before times (pre-staged scheduled runs) ---------------------------------------------------
def started_at(agent):
    return time.time()


@pytest.mark.slow
def test_not_before_holds_a_task_without_a_slot_and_composes_with_max_concurrency(engine):
    from cleo_dask.admission.plugin import admission_state as snapshot

    when = time.time() + 1.0
    held = engine.submit(cd.task(started_at), cd.Agent("held"), not_before=when)
    # both slots stay free: two tasks submitted after the held one start at once
    others = engine.submit(many(cd.task(block_a_bit), 2), cd.Agent("other")).result(timeout=30)
    assert max(s for s, _ in intervals(others)) < when - 0.3
    assert snapshot(engine.client)["sleeping"] >= 1
    start = held.result(timeout=30)["started_at"].value
    assert when <= start < when + 0.3  # released at its time, not before, not much after

    # under max_concurrency=1: the held task takes no lease while it sleeps, and waits for one after
    agent = cd.Agent("one-lease", max_concurrency=1)
    when = time.time() + 0.3
    held = engine.submit(cd.task(started_at), agent, not_before=when)
    busy = engine.submit(cd.task(block_longer), agent)  # starts at once, holds the lease 0.5 s
    busy_start, busy_end = busy.result(timeout=30)["block_longer"].value
    assert busy_start < when
    assert held.result(timeout=30)["started_at"].value >= max(when, busy_end)


def test_a_not_before_in_the_past_runs_at_once_and_bad_values_are_refused(engine, agent):
    t0 = time.time()
    run = engine.submit(cd.task(started_at), agent, not_before=t0 - 10)
    assert run.result(timeout=30)["started_at"].value - t0 < 1.0
    with pytest.raises(cd.WorkflowError, match="not_before must be epoch seconds"):
        engine.submit(cd.task(started_at), agent, not_before="soon")


def test_a_key_withdrawn_before_its_graph_arrives_is_never_released(client):
    import uuid

    import dask

    from cleo_dask.admission.plugin import ANNOTATION, ensure_installed, withdraw

    ensure_installed(client)
    key = f"started_at-withdrawn-{uuid.uuid4().hex}"
    assert withdraw(client, [key]) == [key]  # the withdrawal overtook the submission
    with dask.annotate(**{ANNOTATION: {"limits": {}, "rates": {}, "not_before": time.time()}}):
        fut = client.submit(started_at, None, key=key)
    time.sleep(0.5)
    assert fut.status == "pending"  # held for good, holding no slot, until cancelled
    fut.cancel()
