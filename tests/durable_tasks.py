"""Tasks and scripts for tests/durable/test_durable.py (importable as ``durable_tasks`` by workers and by
the subprocesses the tests start; run as a script: ``python durable_tasks.py crash|many ...``).

Every task execution appends one line, its node's label, to the file ``agent.config["log"]``.
"""
from __future__ import annotations

import os
import sys
import threading
import time

import cleo_dask as cd


def _log(agent, label: str) -> None:
    # one write() of a short line with O_APPEND: lines of concurrent writers never interleave
    fd = os.open(agent.config["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{label}\n".encode())
    finally:
        os.close(fd)


class Step:
    """A node of the layered test workflow: logs itself, sleeps a little, adds up its parents."""

    def __init__(self, label: str, weight: int):
        self.label = label
        self.weight = weight

    def __call__(self, agent, **inputs):
        _log(agent, self.label)
        time.sleep(agent.config.get("sleep", 0))
        return self.weight + sum(inputs.values())


def layered(layers: int = 10, width: int = 30) -> cd.Workflow:
    """``layers`` x ``width`` nodes; each depends on two nodes of the layer before (no fusing)."""
    wf = cd.Workflow("layered")
    for i in range(layers):
        for j in range(width):
            name = f"n{i}_{j}"
            after = [] if i == 0 else [f"n{i - 1}_{j}", f"n{i - 1}_{(j + 1) % width}"]
            wf.add(Step(name, i * width + j), name=name, after=after)
    return wf


@cd.task(cache=True)
def expensive(agent, x: int = 0) -> int:
    """A cached task (an "API call" paid once)."""
    _log(agent, f"expensive-{x}")
    return x * 2


@cd.task(cache=True)
def after_expensive(agent, expensive: int) -> int:
    """A cached child."""
    _log(agent, "after_expensive")
    return expensive + 1


def flaky_once(agent) -> str:
    """Fails while the file ``agent.config["flag"]`` does not exist (creating it): one failure."""
    _log(agent, "flaky")
    flag = agent.config["flag"]
    if not os.path.exists(flag):
        open(flag, "w").close()
        raise RuntimeError("first attempt fails")
    return "ok"


def root(agent) -> int:
    """A root that logs itself."""
    _log(agent, "root")
    return 1


def child(agent, root: int, flaky_once: str) -> str:
    """Depends on the root and on the flaky node."""
    _log(agent, "child")
    return f"{root}-{flaky_once}"


def ask(agent, flaky_once: str, question: str) -> str:
    """Below the flaky node, taking the workflow parameter ``question`` too."""
    _log(agent, "ask")
    return f"{question} {flaky_once}"


def always_fails(agent, **inputs):
    """Fails every time."""
    _log(agent, "always_fails")
    raise ValueError("the service is down")


def unpicklable(agent):
    """A result that cannot be pickled."""
    _log(agent, "unpicklable")
    return threading.Lock()


def uses_it(agent, unpicklable) -> str:
    """Consumes the unpicklable value (works on the same cluster)."""
    _log(agent, "uses_it")
    return type(unpicklable).__name__


def _crash(store: str, log: str) -> None:
    """Start a durable run of the layered workflow, print its id, wait (the test kills us)."""
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client, cd.Engine(client=client, store=store) as engine:
        run = engine.submit(layered(), cd.Agent("crash-agent", config={"log": log, "sleep": 0.02}))
        print(run.id, flush=True)
        run.wait()
        print("finished", flush=True)


@cd.task
def plan_items(agent, n: int = 40) -> list[int]:
    """A planner: the elements a map runs over (issue 19)."""
    _log(agent, "plan_items")
    return list(range(n))


@cd.task
def slow_item(agent, item: int) -> int:
    """One mapped item: logs itself, sleeps a little."""
    _log(agent, f"item-{item}")
    time.sleep(agent.config.get("sleep", 0))
    return item * item


@cd.task
def add_items(agent, slow_item: list[int]) -> int:
    """The mapped items' results, summed."""
    _log(agent, "add_items")
    return sum(slow_item)


def mapped() -> cd.Workflow:
    """plan_items -> map(slow_item) -> add_items."""
    wf = cd.Workflow("mapped")
    wf.add(add_items, after=[wf.map(slow_item, over=wf.add(plan_items))])
    return wf


def _mapcrash(store: str, log: str) -> None:
    """Start a durable run of the mapped workflow, print its id, wait (the test kills us)."""
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client, cd.Engine(client=client, store=store) as engine:
        run = engine.submit(mapped(), cd.Agent("crash-agent", config={"log": log, "sleep": 0.1}))
        print(run.id, flush=True)
        run.wait()
        print("finished", flush=True)


def _many(store: str, log: str, runs: int, tag: str) -> None:
    """Submit ``runs`` small durable runs concurrently against one shared journal."""
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client, cd.Engine(client=client, store=store) as engine:
        agent = cd.Agent(f"agent-{tag}", config={"log": log})
        submitted = [engine.submit(layered(3, 4), agent) for _ in range(runs)]
        assert all(r.result(timeout=120).ok for r in submitted)
        assert all(engine.durable.wait_journaled(r.id) for r in submitted)
        print(len(engine.runs(agent=agent.id, status="succeeded")), flush=True)


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "crash":
        _crash(*rest)
    elif mode == "mapcrash":
        _mapcrash(*rest)
    elif mode == "many":
        _many(rest[0], rest[1], int(rest[2]), rest[3])
