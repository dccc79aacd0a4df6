"""engine.consume on a real broker: requests become journaled runs, each answered once on the results stream."""
from __future__ import annotations

import json
import threading
import time

import pytest

import cleo_dask as cd
from cleo_dask.queues import read_outcomes
from cleo_dask.queues.request import run_id_for


def consume(engine, queue, limit, **kw):
    """Consume until ``limit`` requests are answered (in a thread; fails the test after 60 s)."""
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("counts", engine.consume(queue, limit=limit, **kw)))
    t.start()
    t.join(60)
    assert not t.is_alive(), "consumer did not answer every request"
    return box["counts"]


def by_id(outcomes):
    out = {}
    for o in outcomes:
        assert o["id"] not in out, f"two outcome messages for {o['id']}"
        out[o["id"]] = o
    return out


def test_requests_run_and_bad_ones_are_answered(client, tmp_path, queue):
    spec = {"name": "doc", "nodes": [{"name": "echo", "task": "queue_tasks:echo"},
                                      {"name": "b", "task": "queue_tasks:opaque", "after": ["echo"]}]}
    requests = [
        {"id": "ok-1", "target": "queue_tasks:echo", "inputs": {"x": [1, "two"]}, "agent": {"id": "bot"}},
        {"id": "ok-2", "target": spec, "inputs": {"x": 5}},
        {"id": "fails", "target": "queue_tasks:boom", "inputs": {"x": 1}},
        b"{not json",
        {"id": "unknown-target", "target": "queue_tasks:nope"},
        {"id": "bad-spec", "target": {"nodes": [{"name": "a", "task": "queue_tasks:echo", "after": ["zz"]}]}},
        {"id": "bad-field", "target": "queue_tasks:echo", "colour": "red"},
        {"id": "bad-inputs", "target": "queue_tasks:echo", "inputs": {"y": 1}},
    ]
    assert cd.publish(queue, requests[0]) == "ok-1"
    cd.queues.publish_many(queue, requests[1:])
    with cd.Engine(client=client, store=str(tmp_path / "runs.db")) as engine:
        counts = consume(engine, queue, limit=len(requests))
        records = {r.id: r for r in engine.runs()}
    assert counts["runs"] == 3 and counts["rejected"] == 5
    out = by_id(read_outcomes(queue, 8, timeout=10))
    assert out["ok-1"]["status"] == "succeeded" and out["ok-1"]["results"] == {"echo": [1, "two"]}
    assert out["ok-1"]["run_id"] == run_id_for("ok-1") and records[run_id_for("ok-1")].agent == "bot"
    assert out["ok-2"]["nodes"]["b"]["status"] == "succeeded" and out["ok-2"]["results"] == {}
    assert out["ok-2"]["refs"]["b"].endswith(".pkl") or out["ok-2"]["refs"]["b"]   # not JSON: by reference
    assert out["fails"]["status"] == "failed" and "boom 1" in out["fails"]["nodes"]["boom"]["error"]
    rejected = [o for o in out.values() if o["status"] == "rejected"]
    assert len(rejected) == 5 and all(o["error"] for o in rejected)
    assert out[None]["error"].startswith("request is not JSON")
    assert "nope" in out["unknown-target"]["error"]
    assert "zz" in out["bad-spec"]["error"]
    assert "colour" in out["bad-field"]["error"]
    assert "y" in out["bad-inputs"]["error"]
    assert set(records) == {run_id_for(i) for i in ("ok-1", "ok-2", "fails")}


def test_a_request_delivered_twice_is_one_run_and_one_outcome(client, tmp_path, queue):
    req = {"id": "twice", "target": "queue_tasks:echo", "inputs": {"x": 7}}
    store = str(tmp_path / "runs.db")
    cd.queues.publish_many(queue, [req, req])
    with cd.Engine(client=client, store=store) as engine:
        counts = consume(engine, queue, limit=2)
    assert counts["runs"] == 1 and counts["outcomes"] == 1 and counts["duplicates"] == 1
    cd.publish(queue, req)   # once more, later: answered from the journal, not run again
    with cd.Engine(client=client, store=store) as engine:
        counts = consume(engine, queue, limit=1)
        assert len(engine.runs()) == 1
    assert counts.get("runs", 0) == 0 and counts["duplicates"] == 1
    out = read_outcomes(queue, 3, timeout=3)
    assert [o["id"] for o in out] == ["twice"] and out[0]["results"] == {"echo": 7}


def test_max_in_flight_bounds_the_runs_at_once(client, tmp_path, queue):
    cd.queues.publish_many(queue, [{"id": f"r{i}", "target": "queue_tasks:echo", "inputs": {"x": i}}
                                   for i in range(30)])
    seen = []
    with cd.Engine(client=client, store=str(tmp_path / "runs.db")) as engine:
        engine.add_listener(lambda kind, run: seen.append(sum(not r.done() for r in engine.runs_in_memory.values()))
                            if kind == "submitted" else None)
        counts = consume(engine, queue, limit=30, max_in_flight=4, batch=2)
    assert counts["outcomes"] == 30 and max(seen) <= 4
    assert len(by_id(read_outcomes(queue, 30, timeout=10))) == 30


def test_consume_needs_a_journal(client, queue):
    with cd.Engine(client=client) as engine, pytest.raises(cd.StoreError, match="store="):
        engine.consume(queue)


def test_bad_queue_is_a_clear_error():
    with pytest.raises(cd.CleoError, match="redis://"):
        cd.Queue("amqp://x")


def test_a_dead_consumers_request_is_resumed_from_the_journal(client, tmp_path, queue):
    log, flag, store = tmp_path / "log", tmp_path / "flag", str(tmp_path / "runs.db")
    spec = {"name": "two", "nodes": [{"name": "first", "task": "queue_tasks:first"},
                                      {"name": "second", "task": "queue_tasks:second", "after": ["first"]}]}
    cd.publish(queue, {"id": "long", "target": spec, "inputs": {"log": str(log), "flag": str(flag)}})
    stop = threading.Event()
    with cd.Engine(client=client, store=store) as engine:   # takes the request, dies with its run half done
        t = threading.Thread(target=engine.consume, args=(queue,), kwargs={"stop": stop})
        t.start()
        try:   # "first" done and its output stored (the two nodes may share one Dask task)
            stored = engine.durable.results.node_path(run_id_for("long"), "first")
            deadline = time.monotonic() + 30
            while not (log.exists() and engine.durable.results.exists(stored)):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            stop.set()
            t.join(30)
    flag.touch()
    with cd.Engine(client=client, store=store) as engine:   # claims it after claim_after (2 s): resumes it
        counts = consume(engine, queue, limit=1)
    assert counts["resumed"] == 1 and counts["runs"] == 0
    out = read_outcomes(queue, 2, timeout=3)
    assert len(out) == 1 and out[0]["status"] == "succeeded" and out[0]["resumes"] == 1
    assert out[0]["results"] == {"second": 2}
    assert log.read_text().split().count("first") == 1    # kept from the journal, not run again
