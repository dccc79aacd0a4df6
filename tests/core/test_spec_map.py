"""Spec files: ``map: node`` makes a mapped node (issue 19)."""
from __future__ import annotations

import textwrap

import pytest

import cleo_dask as cd
from _dask_procs import SPECS
from cleo_dask.core.mapping import MapNode
from cleo_dask.core.spec import load_spec


@pytest.fixture(autouse=True)
def tasks_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(SPECS))


def test_a_map_key_makes_a_mapped_node():
    wf = load_spec(SPECS / "mapped.yaml").workflow
    node = wf.nodes["double"]
    assert isinstance(node, MapNode) and node.over == "fetch" and node.item_task.retries == 1
    assert wf.nodes["total"].parents == ("double",)


def test_a_mapped_spec_runs(engine):
    spec = load_spec(SPECS / "mapped.yaml")
    out = engine.submit(spec.workflow, spec.agent).result(timeout=60)
    assert out["total"].value == 2 * sum(range(5))
    assert out["double"].children == tuple(f"double[{i}]" for i in range(5))


def test_bad_map_keys_are_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent("""
        nodes:
          - {name: fetch, task: "pipeline_tasks:fetch"}
          - {name: a, task: "pipeline_tasks:double", map: 3}
          - {name: b, task: "pipeline_tasks:double", map: fetch, after: fetch}
          - {name: c, task: "pipeline_tasks:double", map: nowhere}
    """))
    with pytest.raises(cd.WorkflowError) as info:
        load_spec(str(path))
    text = str(info.value)
    assert "must be the name of the node to map over, got 3" in text
    assert "a mapped node takes no 'after'" in text
    assert "'map' names unknown node 'nowhere'" in text
