"""The order of the events a run publishes (cleo_dask.core.events): what monitors, logs and metrics
rely on.  The messages are built without a cluster; their order is checked on the session's real
in-process cluster, read by a scheduler plugin as the monitor reads them."""
from __future__ import annotations

import time
import uuid

import pytest
from distributed.diagnostics.plugin import SchedulerPlugin

import cleo_dask as cd
from cleo_dask.core.events import TOPIC, event, run_topic
from cleo_dask.runs.eventsend import EventSender


class Recorder(SchedulerPlugin):
    """Every event the scheduler receives on cleo topics, in the order it receives them."""

    def __init__(self) -> None:
        self.name = f"test-events-{uuid.uuid4().hex[:8]}"
        self.seen: list[tuple[str, dict]] = []

    def log_event(self, topic: str, msg: dict) -> None:
        if topic.startswith(TOPIC):
            self.seen.append((topic, msg))

    def of(self, topic: str) -> list[dict]:
        return [msg for t, msg in self.seen if t == topic]

    def wait_for(self, topic: str, kind: str, timeout: float = 30) -> list[dict]:
        """The events of ``topic`` once one of ``kind`` has arrived."""
        deadline = time.monotonic() + timeout
        while not any(m["kind"] == kind for m in self.of(topic)):
            assert time.monotonic() < deadline, f"no {kind!r} event on {topic}: {self.of(topic)}"
            time.sleep(0.02)
        return self.of(topic)


@pytest.fixture
def recorder(cluster):
    rec = Recorder()
    cluster.scheduler.add_plugin(rec)
    yield rec
    cluster.scheduler.remove_plugin(rec.name)


def test_an_event_is_a_plain_dict_with_kind_run_and_time():
    before = time.time()
    msg = event("retry", "r1", node="fetch", attempt=2, delay=0.5)
    assert msg.pop("time") >= before
    assert msg == {"kind": "retry", "run": "r1", "node": "fetch", "attempt": 2, "delay": 0.5}
    assert run_topic("r1") == "cleo-run-r1" and run_topic("r1").startswith(TOPIC)


def test_the_sender_delivers_events_in_the_order_they_were_sent(client, recorder):
    sender, topic = EventSender(client), f"{TOPIC}-test-{uuid.uuid4().hex}"
    for i in range(200):                                     # fire and forget...
        sender.send(topic, {"kind": "n", "run": None, "i": i})
    sender.send(topic, {"kind": "last", "run": None}, wait=True)   # ...then one that waits
    assert [m.get("i") for m in recorder.of(topic)] == list(range(200)) + [None]
    assert [m.get("i") for _, m in client.get_events(topic)] == list(range(200)) + [None]


def test_a_topic_is_retired_behind_the_events_queued_before_it(client, recorder):
    sender, topic = EventSender(client), f"{TOPIC}-test-{uuid.uuid4().hex}"
    for i in range(50):
        sender.send(topic, {"kind": "n", "run": None, "i": i})
    sender.retire(topic)
    sender.wait_sent()
    assert [m["i"] for m in recorder.of(topic)] == list(range(50))   # all sent first...
    assert client.get_events(topic) == ()                             # ...then the topic forgotten


_calls: dict[str, int] = {}


@cd.task(retries=1, backoff=cd.fixed(0.01))
def flaky(agent):
    _calls[agent.id] = _calls.get(agent.id, 0) + 1
    if _calls[agent.id] == 1:
        raise ValueError("first attempt fails")
    return "ok"


@cd.task(fallback=cd.task(lambda agent, error, **inputs: "plan b", name="plan_b"))
def broken(agent, flaky):
    raise RuntimeError("always")


@cd.task
def bad(agent):
    raise KeyError("x")


def test_a_runs_events_follow_what_happened(engine, recorder):
    """``run`` first and ``finished`` last; each failed attempt before what the client decided
    about it (``retry``, ``fallback``, ``outcome``); new keys announced before the fallback that
    runs under them; descendants of a failure ``skipped`` after its ``outcome``."""
    wf = cd.Workflow()
    wf.add(flaky)
    wf.add(broken, after="flaky")
    wf.add(lambda agent, broken: broken, name="uses_b", after="broken")
    wf.add(bad)
    wf.add(lambda agent, bad: bad, name="below_bad", after="bad")
    run = engine.submit(wf, cd.Agent(f"events-{uuid.uuid4().hex[:6]}"))
    out = run.result(timeout=60)
    assert out["flaky"].value == "ok" and out["uses_b"].value == "plan b" and out["below_bad"].status == "upstream_failed"

    events = recorder.wait_for(run_topic(run.id), "finished")
    kinds = [m["kind"] for m in events]
    assert kinds[0] == "run" and kinds[-1] == "finished" and kinds.count("finished") == 1
    assert events[-1]["status"] == "failed"

    def index(kind: str, node: str | None = None, **fields) -> int:
        return next(i for i, m in enumerate(events) if m["kind"] == kind and (node is None or m.get("node") == node)
                    and all(m.get(k) == v for k, v in fields.items()))

    assert index("attempt", "flaky", attempt=1) < index("retry", "flaky", attempt=2)
    assert index("attempt", "broken", attempt=1) < index("keys") < index("fallback", "broken")
    assert events[index("fallback", "broken")]["key"] == events[index("keys")]["nodes"]["broken"]
    assert index("attempt", "bad") < index("outcome", "bad", status="failed") < index("skipped", "below_bad")
    assert not any(m["kind"] == "attempt" and m["node"] in ("uses_b", "below_bad") for m in events)
