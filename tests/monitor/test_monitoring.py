"""Monitoring: the scheduler-side monitor, Prometheus metrics, structured logs, pictures, progress."""
from __future__ import annotations

import io
import json
import logging
import os
import time
import urllib.request
import xml.etree.ElementTree as ET

import pytest
from distributed import Client, LocalCluster
from prometheus_client.parser import text_string_to_metric_families

import cleo_dask as cd
from cleo_dask.monitor.notebook import progress_html
from cleo_dask.monitor.state import snapshot
from cleo_dask.core.picture import COLORS, layout

SVG = "{http://www.w3.org/2000/svg}"


# -- tasks (module level: they pickle by reference to worker processes) -------------------------
@cd.task
def fetch(agent):
    return 3


def fail_first_time(marker: str, value):
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ConnectionError("first call fails")
    return value


@cd.task
def broken(agent, fetch):
    raise ValueError("always broken")


@cd.task
def after_broken(agent, broken):
    return "never runs"


def plan_b(agent, error, fetch):
    return "plan b"


@cd.task(fallback=plan_b)
def with_fallback(agent, fetch):
    raise RuntimeError("use the fallback")


@cd.task
def too_slow(agent):
    time.sleep(0.4)


@cd.task
def flaky_once(agent):
    return fail_first_time(agent.config["marker"], "second time lucky")


def plain_dask_failure(x):
    raise ValueError(f"a plain Dask task failed with {x}")


@cd.task
def chatty(agent):
    print("hello from the worker")
    logging.getLogger("cleo_test_tasks").warning("a worker log record")
    return 1


def monitored_workflow(tmp_path) -> cd.Workflow:
    marker = str(tmp_path / "flaky-marker")

    def flaky(agent, fetch):
        return fail_first_time(marker, fetch * 2)

    wf = cd.Workflow("monitored")
    wf.add(fetch)
    wf.add(flaky, after=["fetch"], retries=1, backoff=cd.fixed(0.2))
    wf.add(broken, after=["fetch"])
    wf.add(after_broken, after=["broken"])
    wf.add(with_fallback, after=["fetch"])
    wf.add(too_slow, timeout=0.1)
    return wf


def scrape(engine) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(engine.dashboard_link.replace("/status", "/metrics"), timeout=30).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name.startswith("cleo_"):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# -- pure ----------------------------------------------------------------------------------------
def test_layout_puts_each_node_after_its_parents():
    pos = layout(["a", "b", "c", "d"], [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    assert pos["a"][0] == 0 and pos["b"][0] == pos["c"][0] == 1 and pos["d"][0] == 2
    assert pos["b"][1] != pos["c"][1]


def test_workflow_visualize_is_an_svg_with_every_node_and_edge():
    wf = cd.Workflow("pic")
    wf.add(fetch)
    wf.add(broken, after=["fetch"])
    wf.add(after_broken, after=["broken"])
    img = wf.visualize()
    assert img._repr_svg_() == img.data and len(img.data) > 500
    root = ET.fromstring(img.data)
    names = [g.get("data-node") for g in root.iter(f"{SVG}g") if g.get("class") == "node"]
    assert names == ["fetch", "broken", "after_broken"]
    assert len([p for p in root.iter(f"{SVG}path") if p.get("class") == "edge"]) == 2
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert {"fetch", "broken", "after_broken"} <= texts


def test_json_formatter_writes_one_object_per_record():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(cd.JsonFormatter())
    log = logging.getLogger("cleo_dask.test_json")
    log.addHandler(handler)
    try:
        log.warning("node %s failed", "x", extra={"cleo": {"run_id": "r1", "node": "x", "status": "failed"}})
    finally:
        log.removeHandler(handler)
    rec = json.loads(stream.getvalue())
    assert rec["message"] == "node x failed" and rec["level"] == "WARNING"
    assert rec["run_id"] == "r1" and rec["node"] == "x" and rec["status"] == "failed"


def test_monitor_state_machine_from_events_and_transitions():
    """The plugin alone, fed what a scheduler would hand it (no cluster): a fused unit a>b, a
    retried node, and the oldest finished run dropped past max_runs."""
    from cleo_dask.core.events import event, run_topic
    from cleo_dask.monitor.state import CleoMonitor

    mon = CleoMonitor(max_runs=2, dashboard=False)

    def send(run_id, kind, **fields):
        mon.log_event(run_topic(run_id), event(kind, run_id, **fields))

    send("r1", "run", agent="a", name="wf", started=1.0, nodes={"a": "ab-r1", "b": "ab-r1", "c": "c-r1"},
         edges=[["a", "b"], ["b", "c"]])
    states = lambda rid: {n: s.state for n, s in mon.runs[rid].nodes.items()}  # noqa: E731
    mon.transition("ab-r1", "waiting", "processing", stimulus_id="x")
    assert states("r1") == {"a": "running", "b": "pending", "c": "pending"}
    mon.transition("ab-r1", "processing", "memory", stimulus_id="x",
                   startstops=[{"action": "compute", "start": 2.0, "stop": 3.0}], worker="tcp://w1")
    assert states("r1") == {"a": "succeeded", "b": "succeeded", "c": "pending"}
    mon.transition("c-r1", "waiting", "processing", stimulus_id="x")
    send("r1", "attempt", node="c", key="c-r1", attempt=1, worker="tcp://w2", start=3.0, end=3.5,
         error="ConnectionError()", error_type="ConnectionError", timed_out=False)
    mon.transition("c-r1", "processing", "erred", stimulus_id="x")
    assert states("r1")["c"] == "failed"
    send("r1", "retry", node="c", attempt=2, delay=1.0)
    assert states("r1")["c"] == "retrying"
    mon.transition("c-r1", "erred", "released", stimulus_id="x")
    mon.transition("c-r1", "waiting", "processing", stimulus_id="x")
    assert states("r1")["c"] == "running"
    mon.transition("c-r1", "processing", "memory", stimulus_id="x")
    send("r1", "finished", status="succeeded", counts={}, ended=5.0)
    run = mon.runs["r1"]
    assert states("r1") == {"a": "succeeded", "b": "succeeded", "c": "succeeded"} and run.state == "succeeded"
    assert run.nodes["c"].attempts == 2 and [b["status"] for b in run.bars] == ["succeeded", "failed", "succeeded"]
    assert run.bars[0]["node"] == "a > b" and run.bars[0]["worker"] == "tcp://w1"

    send("r2", "run", agent="a", name="wf", started=6.0, nodes={"x": "x-r2"}, edges=[])
    send("r3", "run", agent="a", name="wf", started=7.0, nodes={"y": "y-r3"}, edges=[])
    assert list(mon.runs) == ["r2", "r3"] and "ab-r1" not in mon.keys   # r1 (finished) dropped
    send("r3", "finished", status="cancelled", counts={}, ended=8.0)
    assert states("r3") == {"y": "cancelled"}
    assert [r["id"] for r in mon.snapshot()["runs"]] == ["r3", "r2"]


def test_monitor_replays_transitions_that_arrive_before_the_run_event():
    """The engine does not wait for its events: a fast task can finish before its run is announced."""
    from cleo_dask.core.events import event, run_topic
    from cleo_dask.monitor.state import CleoMonitor

    mon = CleoMonitor(dashboard=False)
    rid = "0123456789abcdef"
    key = f"fetch-{rid}-fetch"
    mon.transition(key, "waiting", "processing", stimulus_id="x")
    mon.transition(key, "processing", "memory", stimulus_id="x", worker="tcp://w1",
                   startstops=[{"action": "compute", "start": 2.0, "stop": 3.0}])
    mon.transition("some-other-dask-key", "waiting", "processing", stimulus_id="x")
    assert list(mon.early) == [key]
    mon.log_event(run_topic(rid), event("run", rid, agent="a", name="wf", started=1.0, nodes={"fetch": key},
                                        edges=[]))
    assert mon.runs[rid].nodes["fetch"].state == "succeeded" and not mon.early


# -- on a cluster ----------------------------------------------------------------------------------
def test_monitor_tracks_states_attempts_and_metrics(engine, tmp_path, caplog):
    before = scrape(engine)
    caplog.set_level(logging.INFO, logger="cleo_dask")
    run = engine.submit(monitored_workflow(tmp_path), cd.Agent("watcher"))
    outcome = run.result(timeout=60)
    assert {n: r.status.value for n, r in outcome.items()} == {
        "fetch": "succeeded", "flaky": "succeeded", "broken": "failed", "after_broken": "upstream_failed",
        "with_fallback": "fell_back", "too_slow": "failed"}

    # the scheduler's view converges on the same states (the "finished" event is asynchronous)
    deadline = time.time() + 30
    while True:
        snap = engine.client.run_on_scheduler(snapshot, run.id)
        if snap["run"]["state"] != "running" or time.time() > deadline:
            break
        time.sleep(0.05)
    state = snap["run"]
    assert state["state"] == "failed" and state["agent"] == "watcher" and state["name"] == "monitored"
    assert {n: d["state"] for n, d in state["nodes"].items()} == {n: r.status.value for n, r in outcome.items()}
    assert state["nodes"]["flaky"]["attempts"] == 2
    assert sorted(map(tuple, state["edges"])) == sorted(
        [("fetch", "flaky"), ("fetch", "broken"), ("broken", "after_broken"), ("fetch", "with_fallback")])
    bars = state["bars"]
    assert {b["status"] for b in bars} >= {"failed", "succeeded", "fell_back"}
    assert all(b["worker"].startswith("inproc://") and b["end"] >= b["start"] for b in bars)
    assert snap["runs"][0]["id"] == run.id and snap["runs"][0]["counts"]["succeeded"] == 2

    after = scrape(engine)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("cleo_tasks_total", status="succeeded") == 2
    assert delta("cleo_tasks_total", status="failed") == 2
    assert delta("cleo_tasks_total", status="upstream_failed") == 1
    assert delta("cleo_tasks_total", status="fell_back") == 1
    assert delta("cleo_runs_total", status="failed") == 1
    assert delta("cleo_retries_total") == 1
    assert delta("cleo_fallbacks_total") == 1
    assert delta("cleo_attempts_total", outcome="failed") == 4   # flaky once, broken, with_fallback, too_slow
    assert delta("cleo_attempt_duration_seconds_count", outcome="failed") == 4
    assert delta("cleo_timeouts_total") == 1
    assert ("cleo_schedule_lateness_seconds_count", ()) in after

    # structured log records: the failed attempts (live) and one outcome per node
    records = [r.cleo for r in caplog.records if getattr(r, "cleo", None) and r.cleo["run_id"] == run.id]
    outcomes = {r["node"]: r for r in records if r["event"] == "outcome"}
    assert {n: r["status"] for n, r in outcomes.items()} == {n: r.status.value for n, r in outcome.items()}
    assert outcomes["broken"]["error"].startswith("ValueError") and outcomes["broken"]["agent"] == "watcher"
    failed_attempts = [r for r in records if r["event"] == "attempt" and r["status"] == "failed"]
    assert {r["node"] for r in failed_attempts} == {"flaky", "broken", "with_fallback"}
    assert [r["node"] for r in records if r["event"] == "attempt" and r["status"] == "timed_out"] == ["too_slow"]
    assert all(r["worker"] and r["duration"] is not None for r in failed_attempts)
    ok_attempts = [r for r in records if r["event"] == "attempt" and r["status"] == "succeeded"]
    assert {r["node"] for r in ok_attempts} == {"fetch", "flaky"}


def test_monitor_sees_dask_retries_and_cancellation(engine, tmp_path):
    marker = str(tmp_path / "dask-retry")

    def once_broken(agent):
        return fail_first_time(marker, "ok")

    def slow(agent):
        time.sleep(1.5)

    wf = cd.Workflow("dask-retries")
    wf.add(once_broken, retries=1)    # no backoff: Dask's own retries= annotation
    run = engine.submit(wf)
    assert run.result(timeout=60)["once_broken"].ok
    wf2 = cd.Workflow("to-cancel")
    wf2.add(slow)
    run2 = engine.submit(wf2)
    time.sleep(0.3)
    run2.cancel()
    deadline = time.time() + 30
    while time.time() < deadline:
        snap = {r["id"]: r for r in engine.client.run_on_scheduler(snapshot)["runs"]}
        if snap[run.id]["state"] != "running" and snap[run2.id]["state"] != "running":
            break
        time.sleep(0.05)
    one = engine.client.run_on_scheduler(snapshot, run.id)["run"]
    assert one["nodes"]["once_broken"]["state"] == "succeeded" and one["nodes"]["once_broken"]["attempts"] == 2
    assert snap[run2.id]["state"] == "cancelled" and snap[run2.id]["counts"] == {"cancelled": 1}


def test_run_visualize_colours_nodes_by_outcome(engine, tmp_path):
    run = engine.submit(monitored_workflow(tmp_path), cd.Agent("painter"))
    run.wait(60)
    root = ET.fromstring(run.visualize().data)
    states = {g.get("data-node"): g.get("data-state") for g in root.iter(f"{SVG}g") if g.get("class") == "node"}
    assert states == {"fetch": "succeeded", "flaky": "succeeded", "broken": "failed", "after_broken": "upstream_failed",
                      "with_fallback": "fell_back", "too_slow": "failed"}
    fills = {g.get("data-node"): g.find(f"{SVG}rect").get("fill") for g in root.iter(f"{SVG}g")
             if g.get("class") == "node"}
    # a node skipped because of a failure has a colour of its own (the dashboard uses the same ones)
    assert fills["after_broken"] == COLORS["upstream_failed"] not in (COLORS["skipped"], COLORS["failed"])


def test_progress_html_and_terminal_progress(engine):
    wf = cd.Workflow.chain(fetch, broken, after_broken)
    run = engine.submit(wf)
    out = io.StringIO()
    assert run.show_progress(file=out, notebook=False, interval=0.05) is True
    assert "3/3" in out.getvalue() or "done" in out.getvalue()
    bar = progress_html(run, run.progress(), done=True)
    assert "cleo-progress" in bar and run.id in bar and "failed" in bar


def test_cleo_dashboard_link_serves_the_page(engine):
    link = engine.cleo_dashboard_link
    assert link.endswith("/cleo") and link.startswith("http")
    page = urllib.request.urlopen(link, timeout=30).read().decode()
    assert "Dask: cleo runs" in page and "bokeh" in page.lower()


@pytest.fixture(scope="module")
def process_cluster():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield c


@pytest.mark.slow
def test_prints_and_logs_of_tasks_on_other_processes_reach_the_client(process_cluster, capsys, caplog):
    import dask
    caplog.set_level(logging.WARNING, logger="cleo_test_tasks")
    with dask.config.set({"cleo_dask.monitor.forward-logging": "cleo_test_tasks"}), \
            Client(process_cluster, set_as_default=False) as client, cd.Engine(client=client) as engine:
        result = engine.run(chatty)
        assert result.ok, result
        deadline = time.time() + 30
        seen = ""
        while time.time() < deadline:
            seen += capsys.readouterr().out
            if "hello from the worker" in seen and any("a worker log record" in r.getMessage() for r in caplog.records):
                break
            time.sleep(0.05)
    assert "hello from the worker" in seen
    rec = next(r for r in caplog.records if r.getMessage() == "a worker log record")
    assert rec.worker.startswith("tcp://")


@pytest.mark.slow
def test_retried_attempts_leave_the_workers_error_log_quiet_other_tasks_do_not(process_cluster, tmp_path):
    with Client(process_cluster, set_as_default=False) as client, cd.Engine(client=client) as engine:
        wf = cd.Workflow("quiet")
        wf.add(flaky_once, retries=1)
        run = engine.submit(wf, cd.Agent("q", config={"marker": str(tmp_path / "marker")}))
        result = run.result(timeout=60)["flaky_once"]
        assert result.ok and len(result.attempts) == 2 and result.attempts[0].error is not None
        with pytest.raises(ValueError, match="plain Dask task"):
            client.submit(plain_dask_failure, 7, pure=False).result(timeout=30)
        logs = [msg for records in client.get_worker_logs().values() for _, msg in records]
    assert any("Compute Failed" in m and "plain_dask_failure" in m for m in logs)   # Dask's log, as ever
    assert not any(run.id in m for m in logs if "Compute Failed" in m)             # none for cleo's attempt


def test_each_failed_attempt_is_one_warning_and_the_final_failure_one_error_with_traceback(engine, agent, caplog):
    caplog.set_level(logging.WARNING, logger="cleo_dask")   # the default level: INFO records are off
    wf = cd.Workflow("noisy")
    wf.add(fetch)
    wf.add(broken, after=["fetch"], retries=2)
    run = engine.submit(wf, agent)
    assert run.result(timeout=60)["broken"].status == "failed"
    deadline = time.time() + 30

    def mine(level):
        return [r for r in caplog.records if r.name == "cleo_dask" and r.levelno == level and run.id in r.getMessage()]
    while time.time() < deadline and (len(mine(logging.WARNING)) < 3 or not mine(logging.ERROR)):
        time.sleep(0.05)
    assert [r.cleo["attempt"] for r in mine(logging.WARNING)] == [1, 2, 3]
    assert all("\n" not in r.getMessage() for r in mine(logging.WARNING))   # one line each
    [final] = mine(logging.ERROR)
    assert "node 'broken' failed after 3 attempt(s)" in final.getMessage()
    assert "Traceback" in final.getMessage() and 'raise ValueError("always broken")' in final.getMessage()
    assert final.cleo["traceback"].startswith("Traceback")


@pytest.mark.slow
def test_monitor_and_page_live_on_a_separate_scheduler_process(tmp_path):
    """A real ``dask scheduler`` + ``dask worker``: the plugin, its state and the page are remote."""
    from _dask_procs import Processes, dask_command, env_with_tasks, wait_for_file

    procs = Processes(tmp_path)
    sched_file = tmp_path / "scheduler.json"
    env = env_with_tasks()
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), env["PYTHONPATH"]])  # this module's tasks
    try:
        procs.start("scheduler", dask_command() + ["scheduler", "--scheduler-file", str(sched_file), "--port", "0",
                                                   "--dashboard-address", ":0"], env=env)
        wait_for_file(sched_file, procs)
        procs.start("worker", dask_command() + ["worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                                                "--no-nanny"], env=env)
        with cd.Engine(scheduler_file=str(sched_file)) as engine:
            engine.client.wait_for_workers(1, timeout=60)
            run = engine.submit(cd.Workflow.chain(fetch, broken, after_broken), cd.Agent("remote"))
            assert run.result(timeout=60).counts() == {"succeeded": 1, "failed": 1, "upstream_failed": 1}
            pid = engine.client.run_on_scheduler(os.getpid)
            assert pid != os.getpid()
            deadline = time.time() + 30
            while engine.client.run_on_scheduler(snapshot)["runs"][0]["state"] == "running" and time.time() < deadline:
                time.sleep(0.05)
            runs = engine.client.run_on_scheduler(snapshot)["runs"]
            assert runs[0]["id"] == run.id and runs[0]["state"] == "failed" and runs[0]["agent"] == "remote"
            page = urllib.request.urlopen(engine.cleo_dashboard_link, timeout=30).read().decode()
            assert "Dask: cleo runs" in page
    finally:
        procs.stop()


def test_scheduled_runs_report_their_lateness_to_metrics(engine, agent):
    def count():
        return scrape(engine).get(("cleo_schedule_lateness_seconds_count", ()), 0)

    before = count()
    schedule = engine.schedule(fetch, agent, delay=0.2)
    deadline = time.time() + 30
    while time.time() < deadline and not (schedule.runs() and count() > before):
        time.sleep(0.1)
    assert schedule.runs() and count() == before + 1
