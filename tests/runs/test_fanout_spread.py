"""A wide fan-out whose tasks share one function and carry no durations: the siblings of one root
reach both workers' free slots; they do not pile up on the worker holding the root's output.
(A scheduler that does not queue, ``worker-saturation: inf`` as on the engine's own cluster,
dispatches eagerly and leaves the spreading to Dask's work stealing: see runs/queueing.py.)"""
from __future__ import annotations

import collections
import time

import dask
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import SchedulerPlugin

import cleo_dask as cd


def work(agent, **inputs):
    time.sleep(0.003)


class QueuedKeys(SchedulerPlugin):
    """Records the keys that waited in the scheduler's queue."""

    def __init__(self):
        self.keys = set()

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "queued":
            self.keys.add(key)


def test_on_a_queuing_scheduler_the_siblings_wait_there_for_free_slots():
    """Dask's default scheduler queues root-ish tasks (``worker-saturation`` 1.1): every cleo unit
    counts as one, so the siblings wait on the scheduler and go, best priority first, to
    whichever worker frees a slot."""
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.1}):
        lc = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0")
    with lc, Client(lc, set_as_default=False) as client, cd.Engine(client=client) as engine:
        seen = QueuedKeys()
        lc.scheduler.add_plugin(seen, name="queued-keys")
        wf = cd.Workflow("fan-out")
        wf.add(work, name="t_0")
        for i in range(1, 1001):
            wf.add(work, name=f"t_{i}", after=["t_0"])
        run = engine.submit(wf, cd.Agent("a"))
        outcome = run.result(timeout=120)
        assert outcome.ok
        siblings = [f.key for n, f in run.futures.items() if n != "t_0"]
        assert len(seen.keys & set(siblings)) >= 900
        ran = collections.Counter(r.worker for n, r in outcome.items() if n != "t_0")
        assert len(ran) == 2 and min(ran.values()) >= 400, ran   # who ran what: about half each
