"""Journaled runs sent in a burst cost round trips and transactions per burst, not per run (issue 20)."""
from __future__ import annotations

import dask.config

import cleo_dask as cd
from cleo_dask.durable.journal import Journal


def noop(agent) -> None:
    return None


def test_runs_sent_together_collect_their_records_together(client, tmp_path):
    with cd.Engine(client=client, store=tmp_path / "runs.db") as engine:
        runs = engine.submit_many([{"target": noop, "name": f"r{i}"} for i in range(5)])
        peers = {id(run.metas_peers) for run in runs}
        assert len(peers) == 1 and runs[0].metas_peers is not None   # one Client.run for the burst's records
        for run in runs:
            run.result()
            assert run.status() == "succeeded"
            assert engine.durable.wait_journaled(run.id)
        for run in runs:
            assert engine.durable.journal.run(run.id).status == "succeeded"
            assert [row.status for row in engine.durable.journal.nodes(run.id).values()] == ["succeeded"]


def test_a_run_sent_alone_has_no_peers(client, tmp_path):
    with cd.Engine(client=client, store=tmp_path / "runs.db") as engine:
        run = engine.submit(noop)
        assert run.metas_peers is None
        run.result()
        assert run.status() == "succeeded"


def test_nodes_of_many_runs_are_marked_in_one_transaction(tmp_path):
    journal = Journal(tmp_path / "runs.db")
    for rid in ("a", "b"):
        journal.add_run(rid, agent="x", workflow="w", name=rid, started=1.0, nodes=["n"], results="r", spec=None)
    journal.mark_nodes_many([("a", [("n", "succeeded", 1, 1.0, 2.0, "w1", "a/n")], [("n", 1, 1.0, 2.0, "w1", None, None)]),
                             ("b", [("n", "failed", 2, 1.0, 3.0, "w2", None)], [])])
    assert journal.nodes("a")["n"].status == "succeeded" and journal.nodes("a")["n"].result == "a/n"
    assert journal.nodes("b")["n"].status == "failed" and journal.nodes("b")["n"].attempts == 2
    assert journal.attempts("a") == [("n", 1, 1.0, 2.0, "w1", None, None)] and journal.attempts("b") == []
    journal.close()


def test_learned_durations_of_a_settled_workflow_are_not_read_per_submission():
    from cleo_dask.durable.durationcache import SETTLED, DurationCache
    reads = []
    measured = {"young": {"a": (1.0, 1)}, "settled": {"a": (2.0, SETTLED), "b": (3.0, SETTLED + 5)}}

    def fetch(workflow, limit):
        reads.append(workflow)
        return measured[workflow]
    cache = DurationCache(fetch)
    assert cache.get("young", 10) == {"a": 1.0} and cache.get("young", 10) == {"a": 1.0}
    assert reads == ["young", "young"]            # few measurements: read afresh each time
    assert cache.get("settled", 10) == {"a": 2.0, "b": 3.0} == cache.get("settled", 10)
    assert reads.count("settled") == 1            # settled: reused for durable.durations-ttl seconds
    with dask.config.set({"cleo_dask.durable.durations-ttl": 0}):
        cache.get("settled", 10)
    assert reads.count("settled") == 2


def test_the_journal_counts_measurements_per_node(tmp_path):
    journal = Journal(tmp_path / "runs.db")
    for i in range(3):
        journal.add_run(f"r{i}", agent="x", workflow="w", name="r", started=1.0, nodes=["n"], results="r", spec=None)
        journal.mark_nodes(f"r{i}", [("n", "succeeded", 1, 1.0, 1.0 + i, "w1", None)])
    assert journal.node_durations("w") == {"n": 1.0}
    assert journal.node_durations("w") == {"n": 1.0}   # read again: not yet settled
    journal.close()
