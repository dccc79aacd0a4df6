"""Helper of tests/dynamic/test_signal_kill.py: a durable run waiting for two signals, in a process
that the test kills with SIGKILL once one signal has arrived (``python signal_tasks.py STORE``)."""
from __future__ import annotations

import sys
import time

import cleo_dask as cd


@cd.task
def draft(agent):
    return "draft"


@cd.task
def combine(agent, legal, editor):
    return [legal, editor]


def two_approvals() -> cd.Workflow:
    """draft -> (legal, editor signals) -> combine."""
    wf = cd.Workflow("two-approvals")
    d = wf.add(draft)
    wf.add_signal("legal", after=[d], timeout=600)
    wf.add_signal("editor", after=[d], timeout=600)
    wf.add(combine, after=["legal", "editor"])
    return wf


def main(store: str) -> None:
    import signal_tasks as me   # the tasks by their importable name (not __main__): the resume loads them
    from cleo_dask.durable.journal import Journal
    with cd.Engine(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None, store=store) as engine:
        run = engine.submit(me.two_approvals(), cd.Agent("approver"))
        engine.signal(run.id, "legal", {"ok": True})
        deadline = time.time() + 60
        while time.time() < deadline:
            rows = Journal(store).nodes(run.id)
            if rows.get("legal") is not None and rows["legal"].status == "succeeded":
                break
            time.sleep(0.05)
        print(run.id, flush=True)   # the test kills this process now: the editor's signal never came
        time.sleep(600)


if __name__ == "__main__":
    main(sys.argv[1])
