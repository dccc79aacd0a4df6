"""Workflow spec files: loaded into a Workflow + Agent, validated completely before anything runs."""
from __future__ import annotations

import json
import textwrap

import pytest

import cleo_dask as cd
from _dask_procs import SPECS
from cleo_dask.failures.backoff import Exponential, Fixed
from cleo_dask.core.spec import load_agent, load_spec


@pytest.fixture(autouse=True)
def tasks_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(SPECS))


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def problems_of(target, **kwargs):
    with pytest.raises(cd.WorkflowError) as info:
        load_spec(target, **kwargs)
    return info.value.problems


def test_a_yaml_spec_becomes_a_workflow_and_an_agent():
    spec = cd.load_spec(SPECS / "pipeline.yaml")  # also cleo_dask.core.spec.load_spec
    wf = spec.workflow
    assert isinstance(wf, cd.Workflow) and wf.name == "research"
    assert spec.agent == cd.Agent("researcher-1", config={"n": 4})
    assert list(wf.nodes) == ["fetch", "summarize", "risky"]
    fetch, summarize, risky = (wf.nodes[n] for n in wf.nodes)
    assert fetch.task.retries == 2
    assert fetch.task.backoff == Exponential(first=0.1, factor=2, max=1, jitter=0.1)
    assert fetch.task.retry_on == (ConnectionError, TimeoutError)
    assert summarize.parents == ("fetch",) and summarize.when([1]) is True
    assert summarize.task.timeout == 30
    assert risky.parents == ("fetch",) and risky.task.fallback.name == "rescue"


def test_a_json_spec_with_a_trigger_rule():
    wf = load_spec(SPECS / "failing.json").workflow
    assert wf.nodes["report"].trigger == "all_done"
    assert wf.nodes["explode"].task.backoff == Fixed(0.1)


def test_nodes_may_be_a_mapping_and_come_in_any_order(tmp_path):
    path = write(tmp_path, "m.yaml", """
        agent: solo
        nodes:
          summarize: {task: "pipeline_tasks:summarize", after: fetch, backoff: 2}
          fetch: {task: "pipeline_tasks:fetch"}
        """)
    spec = load_spec(path)
    assert list(spec.workflow.nodes) == ["fetch", "summarize"]
    assert spec.workflow.name == "m" and spec.agent.id == "solo"
    assert spec.workflow.nodes["summarize"].task.backoff == Fixed(2)


def test_every_problem_is_reported_at_once_with_its_location(tmp_path):
    path = write(tmp_path, "bad.yaml", """\
        name: bad
        agent: {id: researcher, colour: blue}
        extra: 1
        nodes:
          - name: fetch
            task: pipeline_tasks:fetch
            retries: two
            backoff: {linear: 3}
          - name: summarize
            task: pipeline_tasks:no_such_function
            after: [fetch, ghost]
            when: os:path
            retry_on: [builtins:len]
            timeout: -1
            trigger: sometimes
          - name: report
            task: no_such_module:report
            fallback: 42
        """)
    problems = problems_of(path)
    expected = [
        "bad.yaml:3: field 'extra': unknown key 'extra'",
        "bad.yaml:2: field 'agent.colour': unknown key 'colour'",
        "bad.yaml:7: node 'fetch', field 'retries': must be an integer >= 0, got 'two'",
        "bad.yaml:8: node 'fetch', field 'backoff'",
        "bad.yaml:10: node 'summarize', field 'task': import path 'pipeline_tasks:no_such_function'",
        "bad.yaml:11: node 'summarize', field 'after': 'after' names unknown node 'ghost'",
        "bad.yaml:12: node 'summarize', field 'when': import path 'os:path' is not callable",
        "bad.yaml:13: node 'summarize', field 'retry_on': import path 'builtins:len' is not an exception class",
        "bad.yaml:14: node 'summarize', field 'timeout': must be > 0 seconds",
        "bad.yaml:15: node 'summarize', field 'trigger': unknown trigger rule 'sometimes'",
        "bad.yaml:17: node 'report', field 'task': import path 'no_such_module:report': cannot import module",
        "bad.yaml:18: node 'report', field 'fallback': must be an import path",
    ]
    for text in expected:
        assert sum(text in p for p in problems) == 1, (text, problems)
    assert len(problems) == len(expected)


def test_a_cycle_is_named(tmp_path):
    path = write(tmp_path, "cycle.yaml", """
        nodes:
          - {name: a, task: "pipeline_tasks:summarize", after: [c]}
          - {name: b, task: "pipeline_tasks:summarize", after: [a]}
          - {name: c, task: "pipeline_tasks:summarize", after: [b]}
          - {name: d, task: "pipeline_tasks:fetch", after: [d]}
        """)
    problems = problems_of(path)
    assert any("node 'a': the graph has a cycle: a -> c -> b -> a" in p or "a -> b -> c -> a" in p for p in problems)
    assert any("node 'd', field 'after': a node cannot come after itself" in p for p in problems)


def test_signatures_are_checked_against_parents(tmp_path):
    path = write(tmp_path, "sig.yaml", """
        nodes:
          - {name: fetch, task: "pipeline_tasks:fetch"}
          - {name: other, task: "pipeline_tasks:fetch"}
          - {name: summarize, task: "pipeline_tasks:summarize", after: [other]}
        """)
    [problem] = problems_of(path)
    assert "sig.yaml:5: node 'summarize'" in problem and "cannot accept the result of parent 'other'" in problem


def test_yaml_syntax_errors_duplicate_keys_and_wrong_shapes(tmp_path):
    [p] = problems_of(write(tmp_path, "syntax.yaml", "nodes:\n  - name: a\n    task: [unclosed\n"))
    assert "syntax.yaml:4: invalid YAML" in p
    [p] = problems_of(write(tmp_path, "dup.yaml", "nodes:\n  a: {task: 'pipeline_tasks:fetch'}\n  a: {task: x}\n"))
    assert "dup.yaml:3: invalid YAML" in p and "duplicate key 'a'" in p
    [p] = problems_of(write(tmp_path, "list.yaml", "- just\n- a list\n"))
    assert "a spec must be a mapping" in p
    [p] = problems_of(write(tmp_path, "empty.yaml", "nodes: []\n"))
    assert "'nodes' is empty" in p
    [p] = problems_of(write(tmp_path, "bad.json", '{"nodes": [}'))
    assert "bad.json: invalid JSON" in p
    [p] = problems_of(str(tmp_path / "missing.yaml"))
    assert "no such spec file" in p and "missing.yaml" in p


def test_nothing_in_a_spec_is_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    path = write(tmp_path, "evil.yaml", f"""
        nodes:
          - name: a
            task: !!python/object/apply:os.system ["touch {marker}"]
        """)
    [p] = problems_of(path)
    assert "invalid YAML" in p and "python/object/apply" in p
    assert not marker.exists()


def test_an_import_path_target_with_an_agent_file(tmp_path):
    agent_file = tmp_path / "agent.json"
    agent_file.write_text(json.dumps({"id": "from-file", "config": {"n": 2}, "max_concurrency": 3}))
    spec = load_spec("pipeline_tasks:workflow", agent_file=agent_file)
    assert spec.workflow.name == "python-built" and list(spec.workflow.nodes) == ["fetch", "summarize"]
    assert spec.agent == cd.Agent("from-file", {"n": 2}, 3)
    # the agent file overrides the spec's agent
    assert load_spec(SPECS / "pipeline.yaml", agent_file=agent_file).agent.id == "from-file"
    [p] = problems_of("pipeline_tasks:NOT_A_WORKFLOW")
    assert "must be a cleo_dask.Workflow or a function returning one, got int" in p


def test_bad_agent_files(tmp_path):
    bad = tmp_path / "agent.yaml"
    bad.write_text("id: ''\nmax_concurrency: 0\nmood: happy\n")
    with pytest.raises(cd.WorkflowError) as info:
        load_agent(bad)
    text = str(info.value)
    assert "agent.yaml:3: field 'mood'" in text and "field 'id'" in text and "field 'max_concurrency'" in text
    problems = problems_of(SPECS / "pipeline.yaml", agent_file=tmp_path / "nope.json")
    assert any("no such agent file" in p for p in problems)


def test_a_spec_gives_default_inputs_for_the_workflows_parameters(tmp_path):
    spec = load_spec(SPECS / "qa.yaml")
    assert spec.workflow.parameters == ("question", "depth", "tone")
    assert spec.workflow.required_parameters == ("question",)
    assert spec.inputs == {"tone": "polite"}   # the rest come with the run (cleo-dask run --input)
    problems = problems_of(write(tmp_path, "bad.yaml", """
        inputs: {depth: 2, colour: red}
        nodes:
          - {name: plan, task: "pipeline_tasks:plan", after: null}
        """))
    assert problems == ["%s:2: field 'inputs.colour': unknown input 'colour': no node takes it "
                        "(parameters: question, depth)" % (tmp_path / "bad.yaml")]
    [p] = problems_of(write(tmp_path, "list.yaml", """
        inputs: [question]
        nodes: [{name: plan, task: "pipeline_tasks:plan"}]
        """))
    assert "list.yaml:2: field 'inputs': must be a mapping of workflow parameter name to value" in p


def test_an_import_path_naming_a_task_runs_it_as_a_one_node_workflow():
    """``cleo-dask run pkg:fetch`` runs the task; only a no-argument function is a workflow factory."""
    spec = load_spec("pipeline_tasks:fetch")      # a plain function whose first parameter is `agent`
    assert list(spec.workflow.nodes) == ["fetch"] and spec.workflow.name == "fetch"
    assert list(load_spec("pipeline_tasks:workflow").workflow.nodes) == ["fetch", "summarize"]


def test_every_entry_point_reads_an_import_path_alike(engine):
    """A factory is called, a task is one node, whether named to load_spec or to engine.submit."""
    from cleo_dask.core.targets import is_factory
    import pipeline_tasks
    assert is_factory(pipeline_tasks.workflow) and not is_factory(pipeline_tasks.fetch)
    assert not is_factory(lambda x: x)          # needs an argument: left to the task checks
    out = engine.submit("pipeline_tasks:workflow", cd.Agent("a", {"n": 2})).result(timeout=60)
    assert list(out) == ["fetch", "summarize"] and out.ok
    out = engine.submit("pipeline_tasks:fetch", cd.Agent("a", {"n": 2})).result(timeout=60)
    assert out["fetch"].value == [0, 1]
