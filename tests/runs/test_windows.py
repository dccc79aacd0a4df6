"""Big runs go to the cluster window by window and release what no node still needs (issue 17,
item 3).  Small window settings make ordinary test workflows windowed: failures, retries,
trigger rules, fail_fast, cancel, progress and resume behave as for a run sent in one graph."""
from __future__ import annotations

import time

import dask
import durable_tasks as dt
import pytest

import cleo_dask as cd
from cleo_dask.core.compile import compile_workflow
from cleo_dask.runs.windows import compile_run, compile_window
from cleo_dask.runs.windowplan import ENOUGH, WindowPlan, WindowSettings, mean_by_task, releasable, window_of

SMALL = {"cleo_dask.window.nodes": 50, "cleo_dask.window.first-nodes": 10}


class Step:
    """Adds up its integer parents, plus one; fails every time if ``fail``; sleeps ``sleep`` s."""

    def __init__(self, fail: bool = False, sleep: float = 0.0):
        self.fail = fail
        self.sleep = sleep

    def __call__(self, agent, **parents):
        if self.sleep:
            time.sleep(self.sleep)
        if self.fail:
            raise ValueError("the service is down")
        return 1 + sum(v for v in parents.values() if isinstance(v, int))


def layered(width: int = 10, depth: int = 20, *, failing=(), all_done=(), sleep: float = 0.0,
            retries: int = 0, **options) -> cd.Workflow:
    """``depth`` layers of ``width`` nodes, each below two nodes of the layer before."""
    wf = cd.Workflow("windowed")
    for d in range(depth):
        for w in range(width):
            name = f"n{d}_{w}"
            after = [] if d == 0 else [f"n{d - 1}_{w}", f"n{d - 1}_{(w + 1) % width}"]
            wf.add(Step(fail=name in failing, sleep=sleep), name=name, after=after,
                   trigger="all_done" if name in all_done else "all_success", retries=retries, **options)
    return wf


def outcome_of(run) -> dict[str, tuple[str, object]]:
    out = run.result(timeout=120)
    return {n: (r.status.value, r.value if n.startswith("n19_") and r.status.value == "succeeded" else None)
            for n, r in out.items()}


# -- the plan, pure -----------------------------------------------------------------------------
def test_windows_follow_the_topological_order_and_skip_known_nodes():
    order = [f"n{i}" for i in range(10)]
    assert window_of(order, 0, 4, set()) == (["n0", "n1", "n2", "n3"], 4)
    assert window_of(order, 4, 4, {"n5", "n6"}) == (["n4", "n7", "n8", "n9"], 10)
    assert window_of(order, 10, 4, set()) == ([], 10)


def test_a_unit_is_released_once_every_child_finished_and_never_a_sink():
    children = {"a": ["b", "c"], "b": ["d"], "c": [], "d": []}
    done = {"b"}
    assert not releasable(("a",), children, done.__contains__)    # c still runs
    done.add("c")
    assert releasable(("a",), children, done.__contains__)
    assert not releasable(("c",), children, done.__contains__)    # a sink: its value is the result
    assert releasable(("a", "b"), {"a": ["b"], "b": ["d"]}, {"d"}.__contains__)   # a chain: its inside is its own


def test_the_first_window_is_small_until_every_task_has_a_duration():
    plan = WindowPlan([f"n{i}" for i in range(500)], WindowSettings(nodes=100, first_nodes=10),
                      frozenset({"fetch", "parse"}))
    assert plan.next_size() == 10
    assert len(plan.take(set(), plan.next_size())) == 10
    assert plan.next_size() == 100   # later windows are full, measured or not
    plan.learn("fetch", 0.5)
    plan.learn("fetch", 1.5)
    plan.learn("parse", 0.1)
    assert plan.durations == {"fetch": 1.0, "parse": 0.1}
    fresh = WindowPlan([], WindowSettings(nodes=100, first_nodes=10), frozenset({"fetch", "parse"}))
    fresh.learn_all(mean_by_task({"a": 2.0, "b": 4.0, "c": 1.0, "gone": 9.0},
                                 {"a": "fetch", "b": "fetch", "c": "parse"}.get))
    assert fresh.durations == {"fetch": 3.0, "parse": 1.0} and fresh.next_size() == 100


def test_a_mid_size_workflow_is_measured_first_unless_nothing_is_left_to_measure():
    """Under ``window.nodes`` but from ``window.measure-from`` nodes on, a workflow whose task
    durations are unknown sends its first ``first-nodes`` alone (measured), then the rest."""
    settings = WindowSettings(nodes=100, first_nodes=10, measure_from=50)
    assert settings.windowed(101, known=True)          # bigger than a window: always
    assert settings.windowed(50, known=False)          # unknown durations: measured first
    assert not settings.windowed(49, known=False)      # too small to be worth it
    assert not settings.windowed(100, known=True)      # known (declared, earlier runs, batch.force)
    agent = cd.Agent("a")
    with dask.config.set({"cleo_dask.window.nodes": 100, "cleo_dask.window.first-nodes": 10,
                          "cleo_dask.window.measure-from": 50}):
        compiled, plan = compile_run(layered(width=10, depth=6), "r1", agent)
        assert plan is not None and plan.remaining == 50 and len(compiled.location) == 10
        assert compile_run(layered(width=10, depth=4), "r2", agent)[1] is None
        compiled, plan = compile_run(layered(width=10, depth=6, duration=0.001), "r3", agent)
        assert plan is None and len(compiled.units) < 60   # one graph, batched from the start
        with dask.config.set({"cleo_dask.batch.force": True}):
            assert compile_run(layered(width=10, depth=6), "r4", agent)[1] is None
    with dask.config.set({"cleo_dask.window.measure-from": 0}):
        with pytest.raises(cd.CleoError, match="cleo_dask.window.measure-from"):
            WindowSettings.from_config()


def test_a_task_measured_often_enough_is_not_measured_again():
    plan = WindowPlan([], WindowSettings(), frozenset({"fetch"}))
    for _ in range(ENOUGH - 1):
        plan.learn("fetch", 0.002)
    assert not plan.enough("fetch") and not plan.enough("parse")
    plan.learn("fetch", 0.002)
    assert plan.enough("fetch") and plan.durations == {"fetch": pytest.approx(0.002)}


def test_every_window_gets_the_critical_path_priorities_of_the_whole_workflow():
    agent = cd.Agent("a")
    wf = layered(width=10, depth=12, duration=1.0)   # long: not batched, one unit per node
    whole = compile_workflow(wf, "r1", agent)
    with dask.config.set(SMALL):
        first, plan = compile_run(wf, "r1", agent)
        assert "levels" in plan.options
        names = plan.take((), plan.next_size())
        later = compile_window(wf, "r1", agent, names, plan, location=first.location, known={})
    assert names[0] == "n5_0" and later.priority and later.priority == {k: whole.priority[k] for k in later.units}


def test_bad_window_settings_are_named():
    with dask.config.set({"cleo_dask.window.nodes": 0}):
        with pytest.raises(cd.CleoError, match="cleo_dask.window.nodes"):
            WindowSettings.from_config()
    with dask.config.set({"cleo_dask.window.send-at": 1.5}):
        with pytest.raises(cd.CleoError, match="cleo_dask.window.send-at"):
            WindowSettings.from_config()


# -- on a cluster -------------------------------------------------------------------------------
def test_a_windowed_run_ends_as_the_same_run_sent_in_one_graph(engine):
    """A failure in the first window, its descendants in later ones: upstream_failed below it,
    an all_done node further down gets the failure and runs on; retries spent as usual."""
    kwargs = dict(failing={"n2_3"}, all_done={"n6_3", "n12_0"}, retries=1)
    whole = outcome_of(engine.submit(layered(**kwargs)))
    with dask.config.set(SMALL):
        run = engine.submit(layered(**kwargs))
        windowed = outcome_of(run)
        stats = run.window_stats()
    assert windowed == whole
    assert whole["n2_3"][0] == "failed" and whole["n5_0"][0] == "upstream_failed"
    assert whole["n6_3"][0] == "succeeded" and whole["n3_5"][0] == "succeeded"
    assert stats["sent"] >= 2 and stats["unsent"] == 0 and stats["released"] > 0
    assert run.status() == "failed"
    assert len(run.result()["n2_3"].attempts) == 2
    assert "Step" in stats["durations"]   # measured in the run, handed to the next windows


def test_finished_windows_are_released_and_their_values_say_so(engine):
    with dask.config.set(SMALL):
        run = engine.submit(layered())
        out = run.result(timeout=120)
    assert out.ok and out["n19_0"].value == 2 ** 20 - 1
    deadline = time.monotonic() + 10
    while len(run.futures) > 10 and time.monotonic() < deadline:   # the last window's, just after the end
        time.sleep(0.05)
    assert len(run.futures) == 10   # the sinks' only, not the 200 nodes'
    with pytest.raises(cd.CleoError, match="keep-values"):
        out["n0_0"].value
    assert out["n0_0"].status == cd.Status.SUCCEEDED and out["n0_0"].end is not None
    with dask.config.set({**SMALL, "cleo_dask.window.keep-values": True}):
        kept = engine.submit(layered()).result(timeout=120)
    assert kept["n0_0"].value == 1 and kept["n19_0"].value == 2 ** 20 - 1


def test_the_scheduler_forgets_the_tasks_a_windowed_run_released(engine):
    """Every task is an ancestor of a sink the run holds: Dask alone would keep all 200 task
    records of a finished windowed run (one per node: nothing is batched here); the windows
    forget those released."""
    def tasks_of(run_id, dask_scheduler=None):
        return sum(1 for k in dask_scheduler.tasks if run_id in str(k))

    with dask.config.set({**SMALL, "cleo_dask.batch.max-duration": 0}):
        run = engine.submit(layered())
        assert run.result(timeout=120).ok
    deadline = time.monotonic() + 10
    while engine.client.run_on_scheduler(tasks_of, run.id) > 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.client.run_on_scheduler(tasks_of, run.id) <= 60   # the last windows' only, not 200
    assert run.result()["n19_0"].value == 2 ** 20 - 1   # the sinks' values are still there


def test_the_monitor_gets_the_edges_of_the_nodes_a_windowed_run_announces(engine):
    """The monitor follows a windowed run's first window (it draws the first nodes): the run
    event carries those nodes' edges, not the whole workflow's (two million at 1M nodes)."""
    from cleo_dask.monitor.state import snapshot
    with dask.config.set(SMALL):
        run = engine.submit(layered())
        assert run.result(timeout=120).ok
    shown = engine.client.run_on_scheduler(snapshot, run.id)["run"]
    assert len(shown["nodes"]) == 10 and shown["edges"] == []   # the first window: layer 0, roots
    whole = engine.submit(layered())
    assert whole.result(timeout=120).ok
    assert len(engine.client.run_on_scheduler(snapshot, whole.id)["run"]["edges"]) == 380


def test_fail_fast_stops_the_windows_not_sent(engine):
    with dask.config.set(SMALL):
        run = engine.submit(layered(failing={"n0_0"}), fail_fast=True)
        out = run.result(timeout=120)
    assert run.status() == "failed" and out["n0_0"].status == cd.Status.FAILED
    assert out["n19_9"].status == cd.Status.CANCELLED
    assert run.window_stats()["unsent"] > 0


def test_cancel_mid_run_ends_the_nodes_not_sent_cancelled(engine):
    with dask.config.set(SMALL):
        run = engine.submit(layered(sleep=0.02))
        progress = run.progress()
        assert progress["total"] == 200 and progress["done"] + progress["pending"] + progress["error"] == 200
        while run.window_stats()["sent"] < 2:
            time.sleep(0.01)
        run.cancel()
        assert run.wait(timeout=60)
    out = run.result(timeout=10)
    assert run.status() == "cancelled"
    assert out["n19_0"].status == cd.Status.CANCELLED
    assert out.counts().get("cancelled", 0) > 100


def test_a_windowed_durable_run_is_journaled_and_resumed(client, tmp_path):
    log = tmp_path / "exec.log"
    agent = cd.Agent("researcher-1", config={"log": str(log), "flag": str(tmp_path / "flag")})
    wf = dt.layered(layers=6, width=20)
    wf.add(dt.root)
    wf.add(dt.flaky_once)
    wf.add(dt.child, after=["root", "flaky_once"])
    with dask.config.set(SMALL), cd.Engine(client=client, store=tmp_path / "runs.db") as engine:
        run = engine.submit(wf, agent)
        out = run.result(timeout=120)
        assert out["child"].status == cd.Status.UPSTREAM_FAILED and run.window_stats()["released"] > 0
        assert engine.durable.wait_journaled(run.id)
        rows = engine.durable.journal.nodes(run.id)
        assert rows["n0_0"].status == "succeeded" and rows["n0_0"].started is not None
        resumed_run = engine.resume(run.id)
        resumed = resumed_run.result(timeout=120)
        engine.durable.wait_journaled(resumed_run.id)   # its durations are read by the run below
        assert resumed.ok and resumed["child"].value == "1-ok"
        lines = log.read_text().split()
        assert lines.count("flaky") == 2 and lines.count("n0_0") == 1 and lines.count("child") == 1
        # the journal's durations of this workflow: a new run's first window is a full one
        again = engine.submit(wf, agent)
        assert again.result(timeout=120).ok
        assert again.window_stats()["sent"] == 3   # 123 nodes in windows of 50


def test_a_workflow_measured_first_but_fitting_one_window_keeps_its_values(engine):
    """Sent in two only to measure its durations, a workflow under ``window.nodes`` is read like a
    run sent in one graph: every node's value, not only the sinks'."""
    with dask.config.set({"cleo_dask.window.nodes": 100, "cleo_dask.window.first-nodes": 10,
                          "cleo_dask.window.measure-from": 50}):
        assert compile_run(layered(width=10, depth=6), "r", cd.Agent("a"))[1] is not None   # measured first
        out = engine.submit(layered(width=10, depth=6)).result(timeout=120)
    assert all(r.status == "succeeded" for r in out.values())
    assert out["n0_0"].value is not None and out["n2_3"].value is not None
