"""Spec files: a node with ``signal: {name, timeout}`` (or ``signal: NAME``) is a signal node."""
from __future__ import annotations

import textwrap

import pytest

import cleo_dask as cd
from _dask_procs import SPECS
from cleo_dask.core.spec import load_spec


@pytest.fixture(autouse=True)
def tasks_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(SPECS))


def write(tmp_path, text):
    path = tmp_path / "approve.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


APPROVAL = """
    agent: solo
    nodes:
      - task: "pipeline_tasks:fetch"
      - signal: {name: approval, timeout: 3600}
        after: fetch
      - name: report
        task: "pipeline_tasks:report"
        after: [fetch, approval]
    """


def test_a_signal_node_in_a_spec_file(tmp_path):
    wf = load_spec(write(tmp_path, APPROVAL)).workflow
    assert list(wf.nodes) == ["fetch", "approval", "report"]
    assert wf.signals == {"approval": 3600.0}
    assert list(wf.nodes["approval"].parents) == ["fetch"]


def test_the_short_form_and_a_trigger_rule(tmp_path):
    wf = load_spec(write(tmp_path, """
        nodes:
          fetch: {task: "pipeline_tasks:fetch"}
          go: {signal: go, after: fetch, trigger: all_done}
        """)).workflow
    assert wf.signals == {"go": None}
    assert wf.nodes["go"].trigger == "all_done"


def test_bad_signal_nodes_are_reported_with_their_place(tmp_path):
    with pytest.raises(cd.WorkflowError) as info:
        load_spec(write(tmp_path, """
            nodes:
              fetch: {task: "pipeline_tasks:fetch"}
              a: {signal: {name: a, timeout: -1}}
              b: {signal: {name: other}}
              c: {signal: c, retries: 2}
              d: {signal: [1], after: fetch}
              e: {signal: e, task: "pipeline_tasks:fetch"}
            """))
    problems = "\n".join(info.value.problems)
    assert ":4: node 'a', field 'signal': signal 'a': timeout must be a positive number" in problems
    assert ":5: node 'b', field 'signal': the signal is named 'other' but its node 'b'" in problems
    assert ":6: node 'c', field 'retries': a signal node takes only 'after' and 'trigger', not 'retries'" in problems
    assert ":7: node 'd', field 'signal': must be a signal name or a mapping {name, timeout}, got [1]" in problems
    assert ":8: node 'e', field 'task': a node has either 'task' or 'signal', not both" in problems
    assert len(info.value.problems) == 5


def test_a_spec_signal_node_waits_for_its_signal(client, tmp_path):
    spec = load_spec(write(tmp_path, APPROVAL))
    with cd.Engine(client=client) as engine:
        run = engine.submit(spec.workflow, spec.agent)
        engine.signal(run.id, "approval", {"approved": True})
        out = run.result(timeout=60)
    assert out["approval"].value == {"approved": True}
    assert out["report"].value == {"fetch": "ok", "approval": "ok"}
