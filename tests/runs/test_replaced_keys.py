"""Keys the slow path replaced never run again (issue 17: a task attempt after its fallback).

When a fallback replaces a node's key (and its descendants'), the old keys stay erred on the
scheduler while an old dependent of theirs is still there.  If the run let go of them one by
one, a ``Client.retry`` of another parent brought an old dependent back to ``waiting`` on the
unwanted erred key, and the scheduler later recomputed that key: the node's task ran again
after its fallback had stood in.
"""
from __future__ import annotations

import threading
import time

import cleo_dask as cd

CALLS: dict[str, int] = {}
LOCK = threading.Lock()


def _count(name: str) -> int:
    with LOCK:
        CALLS[name] = CALLS.get(name, 0) + 1
        return CALLS[name]


def test_a_node_that_fell_back_is_not_run_again_when_another_parent_is_retried(engine, agent):
    tag = f"{time.time_ns()}"

    def broken(agent):
        _count(f"broken-{tag}")
        raise ConnectionError("always down")

    def flaky_once(agent):
        if _count(f"flaky-{tag}") == 1:
            raise ConnectionError("down once")
        return 1

    wf = cd.Workflow("replaced-keys")
    wf.add(broken, fallback=lambda agent, error: 100)              # replaced by its fallback at once
    wf.add(flaky_once, retries=1, backoff=cd.fixed(0.3), retry_on=ConnectionError)   # Client.retry later
    wf.add(lambda agent, broken, flaky_once: broken + flaky_once, name="both", after=["broken", "flaky_once"])
    wf.add(lambda agent, broken: broken, name="only_broken", after=["broken"])
    wf.add(lambda agent, both, only_broken: both + only_broken, name="sink", after=["both", "only_broken"])
    wf.add(lambda agent: time.sleep(1.5) or "slow", name="slow")   # keeps the first graph's sinks watched
    out = engine.submit(wf, agent).result(timeout=60)
    time.sleep(0.5)   # a recomputed old key would run about now
    assert out["broken"].status == "fell_back" and out["sink"].value == 201
    assert [a.kind for a in out["broken"].attempts] == ["task", "fallback"]
    assert CALLS[f"broken-{tag}"] == 1, "the task of a node that fell back ran again"
