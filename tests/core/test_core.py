"""The core engine on real Dask clusters: workflows in, outcomes out."""
from __future__ import annotations

import threading

import networkx as nx
import pytest

import cleo_dask as cd


@cd.task
def fetch(agent):
    return f"news about {agent.config['topic']}"


@cd.task
def summarize(agent, fetch):
    return fetch.upper()


def test_the_readme_example(engine, agent):
    wf = cd.Workflow()
    a = wf.add(fetch)
    wf.add(summarize, after=[a], when=lambda fetch: bool(fetch))
    run = engine.submit(wf, agent)
    outcome = run.result()
    assert outcome["summarize"].value == "NEWS ABOUT DASK"
    assert outcome["summarize"].status == "succeeded"
    assert run.status() == "succeeded"
    assert engine.dashboard_link.startswith("http")
    r = engine.run(fetch, agent)
    assert r.status == "succeeded" and r.value == "news about dask"
    assert r.worker and r.start <= r.end and len(r.attempts) == 1


def test_from_networkx_and_chain_give_the_same_result(engine, agent):
    g = nx.DiGraph([("fetch", "summarize")])
    wf2 = cd.Workflow.from_networkx(g, tasks={"fetch": fetch, "summarize": summarize})
    wf3 = cd.Workflow.chain(fetch, summarize)
    assert engine.submit(wf2, agent).result()["summarize"].value == "NEWS ABOUT DASK"
    assert engine.submit(wf3, agent).result()["summarize"].value == "NEWS ABOUT DASK"


def test_a_false_condition_skips_the_node_and_its_descendants(engine, agent):
    wf = cd.Workflow()
    wf.add(fetch)
    wf.add(summarize, after=["fetch"], when=lambda fetch: "nothing" in fetch)
    wf.add(lambda agent, summarize: summarize + "!", name="shout", after=["summarize"])
    wf.add(lambda agent, fetch: len(fetch), name="length", after=["fetch"])
    out = engine.submit(wf, agent).result()
    assert out["summarize"].status == "skipped" and "condition" in out["summarize"].reason
    assert out["shout"].status == "skipped" and "summarize" in out["shout"].reason
    assert out["length"].value == len("news about dask")
    assert out.ok


def test_parents_results_flow_to_children_by_name_and_through_inputs(engine, agent):
    class Combine:
        """A Cleo-style task object: run(agent, **inputs)."""

        def run(self, agent, **inputs):
            return sorted(inputs.items())

    wf = cd.Workflow()
    wf.add(lambda agent: 1, name="one")
    wf.add(lambda agent: 2, name="two")
    wf.add(lambda agent, one, two: one + two, name="three", after=["one", "two"])
    wf.add(Combine(), name="combine", after=["one", "two", "three"])
    out = engine.submit(wf, agent).result()
    assert out["combine"].value == [("one", 1), ("three", 3), ("two", 2)]


def test_an_error_comes_back_as_a_failed_result_with_its_remote_traceback(engine, agent):
    def explode(agent):
        raise KeyError("the secret is missing")

    r = engine.run(explode, agent)
    assert r.status == "failed"
    assert isinstance(r.error, KeyError)
    assert "explode" in r.traceback and "the secret is missing" in r.traceback
    assert r.attempts[0].worker is not None
    bad = engine.run(42, agent)   # not even a task: still a result, never an exception
    assert bad.status == "failed" and isinstance(bad.error, cd.WorkflowError)


def test_run_accepts_a_single_task_with_inputs_and_priority(engine, agent):
    r = engine.run(lambda agent, x, y: x * y, agent, x=6, y=7)
    assert r.value == 42
    run = engine.submit(summarize, agent, inputs={"fetch": "abc"}, priority=5)
    assert run.result()["summarize"].value == "ABC"


def test_many_agents_share_one_engine_concurrently(engine):
    wf = cd.Workflow.chain(fetch, summarize)
    results = {}

    def one(i):
        a = cd.Agent(f"agent-{i}", config={"topic": f"t{i}"})
        results[i] = [engine.submit(wf, a) for _ in range(3)]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = set()
    for i, runs in results.items():
        for run in runs:
            ids.add(run.id)
            assert run.result(timeout=60)["summarize"].value == f"NEWS ABOUT T{i}"
    assert len(ids) == 24


def test_outcome_statuses_come_without_moving_values(engine, agent):
    big = cd.Workflow()
    big.add(lambda agent: b"x" * 5_000_000, name="blob")
    big.add(lambda agent, blob: len(blob), name="size", after=["blob"])
    run = engine.submit(big, agent)
    out = run.result()
    assert out["blob"].status == "succeeded" and out["blob"].duration is not None
    assert not run._outputs   # statuses and timings came without fetching any value
    assert out["size"].value == 5_000_000


def test_runs_show_a_summary(engine, agent):
    run = engine.submit(cd.Workflow.chain(fetch, summarize), agent)
    run.result()
    assert run.id in repr(run) and "succeeded" in repr(run)
    html = run._repr_html_()
    assert "cleo_dask Run" in html and run.id in html
    assert "<table>" in run.result()._repr_html_()
    assert "Engine" in engine._repr_html_()


def test_cancel_marks_unfinished_nodes_cancelled(engine, agent):
    import time

    wf = cd.Workflow()
    wf.add(lambda agent: time.sleep(0.5) or 1, name="slow")
    wf.add(lambda agent, slow: slow, name="after", after=["slow"])
    run = engine.submit(wf, agent)
    run.cancel()
    out = run.result(timeout=30)
    assert out["after"].status == "cancelled"
    assert run.status() == "cancelled"


def test_nothing_is_submitted_when_validation_fails(engine, agent):
    before = set(engine.client.futures)
    wf = cd.Workflow()
    wf.add(fetch)
    with pytest.raises(cd.WorkflowError, match="cannot be pickled"):
        engine.submit(wf, cd.Agent("x", config={"lock": threading.Lock()}))
    with pytest.raises(cd.WorkflowError, match="no nodes"):
        engine.submit(cd.Workflow(), agent)
    assert set(engine.client.futures) == before


def test_an_engine_connects_by_address_and_closes_only_what_it_started(cluster, client, agent):
    with cd.Engine(address=cluster.scheduler_address) as e:
        assert e.submit(cd.Workflow.chain(fetch, summarize), agent).result()["summarize"].ok
    with cd.Engine(client=client) as e:
        e.run(fetch, agent)
    assert client.status == "running"   # the user's client is left open


@pytest.mark.slow
def test_a_process_cluster_runs_notebook_closures():
    """Functions defined in a notebook (closures, lambdas) travel by value with cloudpickle."""
    prefix = "from-the-notebook"

    def local_fetch(agent):
        return f"{prefix}:{agent.id}"

    with cd.Engine(n_workers=2, processes=True) as engine:
        assert engine.cluster is not None
        wf = cd.Workflow()
        wf.add(local_fetch, name="fetch")
        wf.add(lambda agent, fetch: fetch.upper(), name="upper", after=["fetch"])
        out = engine.submit(wf, cd.Agent("nb")).result(timeout=60)
        assert out["upper"].value == "FROM-THE-NOTEBOOK:NB"
        workers = {r.worker for r in out.values()}
        assert all(w.startswith("tcp://") for w in workers)
    assert engine.cluster.status.name == "closed"


def test_the_whole_workflow_is_one_graph_submission(engine, agent):
    n = 300
    wf = cd.Workflow()
    for i in range(n):
        wf.add(lambda agent, **inputs: len(inputs), name=f"n{i}", after=[f"n{j}" for j in (i - 1, i - 7) if j >= 0])
    graphs = []
    real = engine.client._graph_to_futures

    def counting(*args, **kwargs):
        graphs.append(1)
        return real(*args, **kwargs)

    engine.client._graph_to_futures = counting
    try:
        run = engine.submit(wf, agent)
    finally:
        del engine.client._graph_to_futures
    assert len(graphs) == 1
    assert run.result()["n299"].value == 2


def test_release_lets_the_cluster_forget_a_run_and_keeps_what_was_read(engine, client, agent):
    wf = cd.Workflow.chain(fetch, summarize)
    wf.add(lambda agent, fetch: len(fetch), name="length", after=["fetch"])  # three Dask keys
    run = engine.submit(wf, agent)
    outcome = run.result()
    assert outcome["summarize"].value == "NEWS ABOUT DASK"   # values are fetched when read
    keys = list(run._futures)
    assert len(keys) == 3 and all(k in client.refcount for k in keys)
    run.release()   # one message for all the run's keys

    def held(dask_scheduler=None, keys=keys):
        return [k for k in keys if k in dask_scheduler.tasks]

    import time
    deadline = time.time() + 10
    while client.run_on_scheduler(held) and time.time() < deadline:
        time.sleep(0.05)
    assert client.run_on_scheduler(held) == []
    assert not any(k in client.refcount or k in client.futures for k in keys)
    assert outcome["summarize"].value == "NEWS ABOUT DASK"   # read before release: still there
    assert outcome["length"].status == "succeeded"           # statuses and timings too
    with pytest.raises(cd.CleoError, match="released"):
        outcome["length"].value                                # never read: gone with the cluster's copy
