"""Mapped nodes (issue 19): ``wf.map(search, over=plan)`` makes one ordinary node per element of
``plan``'s result at run time; a node after it receives their results as a list, in order."""
from __future__ import annotations

import dask
import pytest

import cleo_dask as cd
from cleo_dask.core.mapping import MapError, check_mappable, expansion, map_node


@cd.task
def plan(agent, question="q"):
    return ["dask scheduling", "ray core", "temporal"]


@cd.task
def plan_nothing(agent):
    return []


@cd.task
def plan_text(agent):
    return 42


@cd.task
def plan_many(agent, n: int = 5):
    return list(range(n))


@cd.task(retries=2)
async def search(agent, item):
    return item.upper()


@cd.task
def square(agent, item):
    if item == 3:
        raise ValueError("three is unlucky")
    return item * item


@cd.task
def combine(agent, search):
    return " | ".join(search)


@cd.task
def total(agent, square):
    return [x if isinstance(x, int) else "failed" for x in square]


def mapped(planner=plan, item=search, consumer=combine, **consumer_options):
    wf = cd.Workflow("mapped")
    p = wf.add(planner)
    s = wf.map(item, over=p)
    wf.add(consumer, after=[s], **consumer_options)
    return wf, s


def test_each_element_becomes_an_ordinary_node_and_the_consumer_gets_the_list_in_order(engine):
    wf, _ = mapped()
    out = engine.submit(wf).result(timeout=60)
    assert out["combine"].value == "DASK SCHEDULING | RAY CORE | TEMPORAL"
    assert out["search"].children == ("search[0]", "search[1]", "search[2]")
    assert out["search[1]"].value == "RAY CORE"
    assert out["search[1]"].status == cd.Status.SUCCEEDED and out["search[1]"].attempts
    assert out["search"].value == ["DASK SCHEDULING", "RAY CORE", "TEMPORAL"]
    assert len(wf) == 3   # the user's workflow is not changed by its runs


def test_an_empty_list_gives_an_empty_list_downstream(engine):
    wf, _ = mapped(planner=plan_nothing)
    out = engine.submit(wf).result(timeout=60)
    assert out["combine"].ok and out["combine"].value == ""
    assert out["search"].children == () and out["search"].value == []


def test_a_failed_item_skips_an_all_success_consumer(engine):
    wf, _ = mapped(planner=plan_many, item=square, consumer=total)
    run = engine.submit(wf)
    out = run.result(timeout=60)
    assert out["square[3]"].status == cd.Status.FAILED
    assert out["square[4]"].value == 16
    assert out["total"].status == cd.Status.UPSTREAM_FAILED
    assert run.status() == "failed"


def test_a_failed_item_is_a_failure_in_its_position_for_an_all_done_consumer(engine):
    wf, _ = mapped(planner=plan_many, item=square, consumer=total, trigger="all_done")
    out = engine.submit(wf).result(timeout=60)
    assert out["total"].value == [0, 1, 4, "failed", 16]


def test_items_have_their_own_retries(engine):
    calls = []

    @cd.task(retries=2)
    def flaky(agent, item):
        calls.append(item)
        if calls.count(item) == 1 and item == 1:
            raise RuntimeError("first try fails")
        return item

    wf = cd.Workflow()
    wf.map(flaky, over=wf.add(plan_many))
    out = engine.submit(wf, inputs={"n": 3}).result(timeout=60)
    assert out["flaky"].value == [0, 1, 2]
    assert len(out["flaky[1]"].attempts) == 2


def test_a_result_longer_than_the_limit_fails_the_map_node_naming_the_length(engine):
    wf, _ = mapped(planner=plan_many, item=square, consumer=total)
    with dask.config.set({"cleo_dask.dynamic.max-map-length": 4}):
        out = engine.submit(wf, inputs={"n": 7}).result(timeout=60)
    assert out["square"].status == cd.Status.FAILED
    assert isinstance(out["square"].error, cd.WorkflowError)
    assert "7 elements" in str(out["square"].error) and "max-map-length (4)" in str(out["square"].error)
    assert out["total"].status == cd.Status.UPSTREAM_FAILED


def test_a_parent_that_is_not_a_sequence_fails_the_map_node(engine):
    wf, _ = mapped(planner=plan_text, item=square, consumer=total)
    out = engine.submit(wf).result(timeout=60)
    assert out["square"].status == cd.Status.FAILED
    assert "not a sequence" in str(out["square"].error) and "'plan_text'" in str(out["square"].error)
    assert out["total"].status == cd.Status.UPSTREAM_FAILED


def test_a_failed_parent_leaves_the_map_to_the_trigger_rules(engine):
    @cd.task
    def broken(agent):
        raise ValueError("no plan")

    wf, _ = mapped(planner=broken, item=square, consumer=total)
    out = engine.submit(wf).result(timeout=60)
    assert out["broken"].status == cd.Status.FAILED
    assert out["square"].status == cd.Status.UPSTREAM_FAILED
    assert out["total"].status == cd.Status.UPSTREAM_FAILED


def test_maps_of_many_runs_at_once(engine):
    wf, _ = mapped(planner=plan_many, item=square, consumer=total, trigger="all_done")
    runs = engine.submit_many([{"target": wf, "inputs": {"n": n}} for n in (1, 2, 6)])
    assert [run.result(timeout=60)["total"].value for run in runs] == [[0], [0, 1], [0, 1, 4, "failed", 16, 25]]


def test_pure_parts():
    node = map_node("search", search, "plan")
    assert node.arg == "item" and node.parents == ("plan",)
    items, gather = expansion(node, 2)
    assert [i.name for i in items] == ["search[0]", "search[1]"] and gather.parents == ("search[0]", "search[1]")
    assert check_mappable("m", "p", (1, 2), 5) == 2
    with pytest.raises(MapError, match="not a sequence"):
        check_mappable("m", "p", "text", 5)
    with pytest.raises(MapError, match="3 elements"):
        check_mappable("m", "p", [1, 2, 3], 2)


def test_bad_map_input_is_refused_before_anything_runs():
    wf = cd.Workflow()
    with pytest.raises(cd.WorkflowError, match="unknown node 'nope'"):
        wf.map(search, over="nope")
    p = wf.add(plan)

    @cd.task
    def two(agent, a, b):
        return a

    with pytest.raises(cd.WorkflowError, match="besides the element"):
        wf.map(two, over=p, arg="a")
    wf.map(search, over=p)
    with pytest.raises(cd.WorkflowError, match="duplicate node name 'search'"):
        wf.map(search, over=p)


def test_items_appear_on_the_dashboard_state_and_in_progress(engine):
    import time
    from cleo_dask.monitor.state import snapshot
    wf, _ = mapped()
    run = engine.submit(wf)
    run.result(timeout=60)
    assert run.progress()["done"] == 6 and run.progress()["total"] == 6
    deadline = time.time() + 30
    while True:
        snap = engine.client.run_on_scheduler(snapshot, run.id)["run"]
        if snap["state"] != "running" or time.time() > deadline:
            break
        time.sleep(0.05)
    assert {n: d["state"] for n, d in snap["nodes"].items() if n.startswith("search[")} == {
        "search[0]": "succeeded", "search[1]": "succeeded", "search[2]": "succeeded"}
    assert ["search[2]", "search"] in snap["edges"]


def test_a_parent_skipped_on_its_worker_skips_the_map_and_a_failed_map_below_a_map(engine):
    @cd.task
    def given(agent, square):
        return square

    wf = cd.Workflow()
    p = wf.add(plan_many, when=lambda: False)
    wf.add(given, after=[wf.map(square, over=p)], trigger="all_done")
    out = engine.submit(wf).result(timeout=60)
    assert out["plan_many"].status == cd.Status.SKIPPED
    assert out["square"].status == cd.Status.SKIPPED and out["square"].children == ()
    assert out["given"].ok and out["given"].value is None   # as below any skipped parent

    @cd.task
    def again(agent, item):
        return item

    wf = cd.Workflow()
    inner = wf.map(square, over=wf.add(plan_many))          # square[3] fails: the gather is failed
    wf.map(again, over=inner)
    out = engine.submit(wf).result(timeout=60)
    assert out["square"].status == cd.Status.FAILED and out["again"].status == cd.Status.UPSTREAM_FAILED


def test_a_map_over_a_map(engine):
    @cd.task
    def pairs(agent, item):
        return [item, item]

    @cd.task
    def flat(agent, item):
        return item

    wf = cd.Workflow()
    outer = wf.map(pairs, over=wf.add(plan_many))
    wf.map(flat, over=outer)
    out = engine.submit(wf, inputs={"n": 3}).result(timeout=60)
    assert out["flat"].value == [[0, 0], [1, 1], [2, 2]]
