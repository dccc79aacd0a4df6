"""The monitor's page, one direction: the plugin keeps state, the page reads it, the installer wires
them.  What the page shows is computed by pure functions of the plugin's state (no browser)."""
from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import pytest
from distributed import Client, LocalCluster

import cleo_dask as cd
from cleo_dask.cluster.local import dashboard_link
from cleo_dask.core.events import event, run_topic
from cleo_dask.monitor import page_data
from cleo_dask.monitor.install import install
from cleo_dask.monitor.state import PLUGIN_NAME, CleoMonitor, RunSummary


def monitor_with(*runs: tuple[str, dict[str, str], list[list[str]]], **kwargs) -> CleoMonitor:
    """A monitor fed the ``run`` events of ``(run id, {node: key}, edges)``, as a scheduler would."""
    mon = CleoMonitor(dashboard=False, **kwargs)
    for i, (rid, nodes, edges) in enumerate(runs):
        mon.log_event(run_topic(rid), event("run", rid, agent="a", name="wf", started=10.0 + i, nodes=nodes,
                                            edges=edges))
    return mon


def test_a_run_summary_is_typed_and_the_snapshot_is_its_plain_copy():
    mon = monitor_with(("r1", {"a": "a-r1", "b": "b-r1"}, [["a", "b"]]))
    [summary] = mon.summaries()
    assert summary == RunSummary("r1", "wf", "a", 10.0, None, "running", {"pending": 2}, 2)
    assert mon.snapshot()["runs"] == [{"id": "r1", "name": "wf", "agent": "a", "started": 10.0, "ended": None,
                                       "state": "running", "counts": {"pending": 2}, "nodes": 2}]


def test_runs_table_shows_the_newest_runs_first_and_counts_the_older_ones():
    mon = monitor_with(*[(f"r{i}", {"x": f"x-r{i}"}, []) for i in range(4)])
    table = page_data.runs_table(mon.summaries(), now=20.0, limit=3)
    assert table.index("data-run='r3'") < table.index("data-run='r2'") < table.index("data-run='r1'")
    assert "data-run='r0'" not in table and "… 1 older runs" in table
    assert "pending 1" in table and "data-state='running'" in table


def test_dag_columns_lay_nodes_out_by_generation_and_label_short_names():
    long = "a_rather_long_node_name"
    mon = monitor_with(("r1", {"a": "a-r1", long: "l-r1", "c": "c-r1"}, [["a", long], [long, "c"]]))
    run = mon.runs["r1"]
    nodes, edges = page_data.dag_columns(run, page_data.drawn_nodes(run))
    assert nodes["x"] == [0.0, 1.0, 2.0] and nodes["label"] == ["a", long[:17] + "…", "c"]
    assert nodes["state"] == ["pending"] * 3 and len(edges["xs"]) == 2


def test_only_the_nodes_that_changed_are_patched():
    mon = monitor_with(("r1", {"a": "a-r1", "b": "b-r1"}, [["a", "b"]]))
    run = mon.runs["r1"]
    before = page_data.state_columns(run.nodes.values())
    assert page_data.changed_rows(before, before) == {}
    mon.transition("b-r1", "waiting", "processing", stimulus_id="x")
    patch = page_data.changed_rows(before, page_data.state_columns(run.nodes.values()))
    assert patch["state"] == [(1, "running")] and list(patch) == list(before)


def test_new_bars_stream_only_what_was_added_and_restart_when_some_were_dropped():
    mon = monitor_with(("r1", {"a": "a-r1"}, []), max_bars=2)
    run = mon.runs["r1"]
    for i in range(3):
        run.bar(node="a", worker="w", start=11.0 + i, end=11.5 + i, status="failed", attempt=i, error="E")
    assert page_data.new_bars(run, seen=2) == (run.bars[-1:], False)
    assert page_data.new_bars(run, seen=0) == (run.bars, True)   # the first was dropped past max_bars
    assert page_data.new_bars(run, seen=3) == ([], False)
    cols = page_data.bar_columns(run.bars, t0=10.0, now=20.0)
    assert cols["left"] == [2.0, 3.0] and cols["info"] == ["E", "E"]


def test_the_installer_serves_the_page_of_a_monitor_built_with_one():
    """The plugin never adds its page: ``install`` does, unless the monitor was built without one."""
    with LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        page = dashboard_link(cluster).rsplit("/status", 1)[0] + "/cleo"
        client.register_plugin(CleoMonitor(dashboard=False), name=PLUGIN_NAME)
        assert install(client) is True   # the registered monitor (no page) stays
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(page, timeout=30)
        client.unregister_scheduler_plugin(PLUGIN_NAME)
        assert install(client) is True
        assert "Dask: cleo runs" in urllib.request.urlopen(page, timeout=30).read().decode()


def test_the_picture_of_a_live_run_colours_nodes_by_the_monitors_view(engine, tmp_path):
    gate = str(tmp_path / "go")

    def slow(agent):
        while not os.path.exists(gate):
            time.sleep(0.02)
        return 1

    def then(agent, slow):
        return slow + 1

    wf = cd.Workflow("live")
    wf.add(slow)
    wf.add(then, name="next", after=["slow"])
    run = engine.submit(wf, cd.Agent("painter"))
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            root = ET.fromstring(run.visualize().data)
            states = {g.get("data-node"): g.get("data-state") for g in root.iter("{http://www.w3.org/2000/svg}g")
                      if g.get("class") == "node"}
            if states["slow"] == "running":
                break
            time.sleep(0.05)
        assert states == {"slow": "running", "next": "pending"}   # the futures alone say "pending" for both
    finally:
        open(gate, "w").close()
    assert run.result(timeout=30).counts() == {"succeeded": 2}
