"""Dask's work stealing never asserts on a task prefix with a duration estimate of 0
(:mod:`cleo_dask.admission.stealing`): async fan-outs, older workers' secedes, ``duration=0``.

Each case runs on a real cluster of 2 worker processes x 1 thread with stealing on (Dask's
default) and reads the scheduler's log, where the extension's ``AssertionError`` in
``steal_time_ratio`` lands ("Plugin failed with exception")."""
from __future__ import annotations

import asyncio
import sys

import cloudpickle
import dask
import pytest
from distributed import Client, LocalCluster

import cleo_dask as cd
from cleo_dask.admission.plugin import ensure_installed
from cleo_dask.admission.stealing import FLOOR, floor_duration

cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the plain-Dask tasks below


@pytest.fixture(scope="module")
def client():
    with dask.config.set({"distributed.scheduler.work-stealing": True}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        yield c


def stealing_failures(client) -> set[str]:
    """The scheduler's log lines about work stealing failing (each starts with its time)."""
    return {msg for _, msg in client.get_scheduler_logs(n=10_000)
            if "steal_time_ratio" in msg or ("AssertionError" in msg and "stealing" in msg)}


def plan(agent, topic):
    return topic


async def search(agent, plan):
    await asyncio.sleep(0.2)
    return plan


def fan_out(n):
    wf = cd.Workflow()
    wf.add(plan, name="plan")
    for i in range(n):
        wf.add(search, name=f"search{i}", after=["plan"])
    return wf


@pytest.mark.filterwarnings("ignore::cleo_dask.admission.cluster_needs.ClusterWarning")
def test_async_fan_outs_run_with_stealing_on(client):
    before = stealing_failures(client)
    # queued async units with a parent reach the workers while others of their task have
    # already seceded: their prefix's estimate was 0 then
    with cd.Engine(client=client) as engine:
        runs = [engine.submit(fan_out(12), inputs={"topic": f"t{i}"}) for i in range(4)]
        outs = [r.result() for r in runs]
    assert [o["search11"].value for o in outs] == ["t0", "t1", "t2", "t3"]
    assert stealing_failures(client) - before == set()
    assert len(client.scheduler_info()["workers"]) == 2


def parent():
    return 1


async def old_style_child(x, key):
    # what cleo_dask's I/O units sent before: "seceded, after 0 s"
    from distributed import get_worker
    from distributed.worker_state_machine import SecedeEvent
    worker = get_worker()
    worker.loop.add_callback(worker.handle_stimulus,
                             SecedeEvent(key=key, compute_duration=0.0, stimulus_id=f"old-{key}"))
    await asyncio.sleep(0.3)
    return x


def test_scheduler_guard_covers_workers_reporting_zero(client):
    before = stealing_failures(client)
    ensure_installed(client)   # the admission plugin, as any cleo graph with limits installs it
    p = client.submit(parent, key="parent-0")
    p.result()
    # one graph: the children are queued and sent as seceding ones free slots
    keys = [f"oldchild-{i}" for i in range(12)]
    futs = client.map(old_style_child, [p] * len(keys), keys, key=keys)
    assert client.gather(futs) == [1] * len(keys)
    assert stealing_failures(client) - before == set()
    assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.task_prefixes["oldchild"].duration_average) != 0


@cd.task(duration=0)
def instant(agent, plan):
    return plan


def test_a_declared_duration_of_zero(client):
    before = stealing_failures(client)
    wf = cd.Workflow()
    wf.add(plan, name="plan")
    for i in range(8):
        wf.add(instant, name=f"instant{i}", after=["plan"])
    with cd.Engine(client=client) as engine:
        out = engine.submit(wf, inputs={"topic": "x"}).result()
    assert out["instant7"].value == "x"
    assert stealing_failures(client) - before == set()


def test_floor_duration():
    assert floor_duration(0) == FLOOR
    assert floor_duration(-1) == -1          # Dask's "unknown" stays unknown
    assert floor_duration(0.25) == 0.25
