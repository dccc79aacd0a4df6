"""A 200,000-node run keeps a compact outcome on the client (issue 17, item 3).

The workflow is layered (100 layers of 2,000 nodes, each node after the first layer fed by the
node at its place in the layer before): the engine fuses each line into one Dask task, so the
cluster holds 2,000 tasks while the client holds the outcome of 200,000 nodes: what is measured
here is the client's cost per node (node locations, the workers' records, the outcome's columns),
not the scheduler's.  The workers run in their own processes (``processes=True``), so the node
outputs they hold are not in the client's resident memory.

The bound, 1.5 KiB per node: a node costs the run its location (a dict entry and a
``(key, index)`` tuple), a node number (a dict entry and an int), its workers' record (25 bytes
of columns) and its row of the outcome (29 bytes of columns), each well under 200 bytes, plus
the compiled graph's per-node call (a ``NodeCall``, freed once sent); one ``TaskResult`` per
node, as before, was about 1 KiB on its own (its attempts tuple and ``Attempt`` included).
"""
from __future__ import annotations

import gc

import dask
import psutil
import pytest
from _dask_procs import Processes, dask_command, env_with_cleo_only, wait_for_file
from distributed import Client

import cleo_dask as cd
from cleo_dask.core.outcome import Status

LAYERS, WIDTH = 100, 2_000
BOUND_PER_NODE = 1536   # bytes of client resident memory per node (see the module docstring)
FAILING = {f"l50-{i}" for i in range(0, WIDTH, 400)}   # 5 nodes fail, each with its line below it


@cd.task(name="step")
def step(agent, **parents):
    return None


@cd.task(name="flaky_step", retries=1, backoff=cd.fixed(0))
def flaky_step(agent, **parents):
    raise ValueError("no luck")


def layered_lines() -> cd.Workflow:
    wf = cd.Workflow("layered-lines")
    for layer in range(LAYERS):
        for i in range(WIDTH):
            name = f"l{layer}-{i}"
            wf.add(flaky_step if name in FAILING else step, name=name,
                   after=[f"l{layer - 1}-{i}"] if layer else [])
    return wf


def _rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


@pytest.fixture
def process_engine(tmp_path):
    """An engine on a scheduler and two workers of their own processes (their memory is not the client's)."""
    procs = Processes(tmp_path)
    try:
        sched_file = tmp_path / "scheduler.json"
        procs.start("scheduler", dask_command() + ["scheduler", "--host", "127.0.0.1", "--port", "0",
                                                   "--no-dashboard", "--scheduler-file", str(sched_file)],
                    env_with_cleo_only())
        address = wait_for_file(sched_file, procs)["address"]
        procs.start("workers", dask_command() + ["worker", address, "--nworkers", "2", "--nthreads", "1",
                                                 "--no-dashboard"], env_with_cleo_only())
        with Client(address, set_as_default=False) as client, cd.Engine(client=client) as engine:
            client.wait_for_workers(2, timeout=60)
            yield engine
    finally:
        procs.stop()


@pytest.mark.slow
def test_a_200000_node_run_keeps_its_outcome_in_bounded_client_memory(process_engine):
    wf = layered_lines()
    nodes = len(wf)
    assert nodes == 200_000
    before = _rss()

    # one graph: this measures the outcome's cost per node (a windowed run also holds its plan and
    # what it released: tests/runs/test_windows.py)
    with dask.config.set({"cleo_dask.window.nodes": 1_000_000, "cleo_dask.window.measure-from": 1_000_000}):
        outcome = process_engine.submit(wf, cd.Agent("scale")).result()

    downstream = len(FAILING) * (LAYERS - 51)
    assert outcome.counts() == {"succeeded": nodes - len(FAILING) - downstream, "failed": len(FAILING),
                                "upstream_failed": downstream}
    failed = outcome.failed()
    assert sorted(r.node for r in failed) == sorted(FAILING)
    for r in failed:   # every failed attempt is named, with its error
        assert [(a.number, a.error_type) for a in r.attempts] == [(1, "ValueError"), (2, "ValueError")]
        assert isinstance(r.error, ValueError)
    assert outcome["l99-1"].status == Status.SUCCEEDED and outcome["l99-1"].value is None
    assert outcome["l99-0"].status == Status.UPSTREAM_FAILED and "l50-0" in outcome["l99-0"].reason

    seen = 0
    for name, r in outcome.items():   # one result at a time
        seen += 1
        assert r.node == name
    assert seen == nodes and not outcome.ok

    grown = _rss() - before
    assert grown <= BOUND_PER_NODE * nodes, f"client memory grew {grown / nodes:.0f} bytes per node"
