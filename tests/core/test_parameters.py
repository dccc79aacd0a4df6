"""Workflow parameters (task arguments no parent provides, given as a run's inputs) and ``after=None``."""
from __future__ import annotations

import networkx as nx
import pytest

import cleo_dask as cd


@cd.task
def plan(agent, question):
    return f"plan for {question!r}"


@cd.task
def answer(agent, plan, question, tone="plain"):
    return f"{tone} answer to {question!r} after {plan}"


def record(agent, **inputs):
    return sorted(inputs)


def qa_workflow():
    wf = cd.Workflow("qa")
    wf.add(plan)
    wf.add(answer, after=["plan"])
    return wf


# -- after= --------------------------------------------------------------------------------------
def test_after_none_means_no_parents():
    wf = cd.Workflow()
    wf.add(plan, after=None)
    wf.add(answer, after=["plan"])
    assert wf.nodes["plan"].parents == ()
    same = cd.Workflow.from_networkx(nx.DiGraph([("plan", "answer")]), tasks={"plan": plan, "answer": answer})
    assert [n.parents for n in same.nodes.values()] == [n.parents for n in wf.nodes.values()]


@pytest.mark.parametrize("after, message", [
    (123, "node 'answer': 'after' must be a node name, a list of node names or None, got 123"),
    ({"plan": 1}, "node 'answer': 'after' must be a node name, a list of node names or None"),
    ([plan], "node 'answer': 'after' must list node names (strings), got <cleo_dask.Task plan> "
             "(pass the node's name, e.g. 'plan': what wf.add returned)"),
    (["plan", 7], "node 'answer': 'after' must list node names (strings), got 7"),
])
def test_a_bad_after_is_a_workflow_error_naming_the_node(after, message):
    wf = cd.Workflow()
    wf.add(plan)
    with pytest.raises(cd.WorkflowError) as err:
        wf.add(answer, after=after)
    assert message in str(err.value)
    assert list(wf.nodes) == ["plan"]   # nothing already accepted was lost


# -- parameters ----------------------------------------------------------------------------------
def test_arguments_no_parent_provides_are_the_workflows_parameters():
    wf = qa_workflow()
    # in order of first appearance; one with a default everywhere is optional
    assert wf.parameters == ("question", "tone")
    assert wf.required_parameters == ("question",)
    assert "parameters: question, tone" in repr(wf)
    assert cd.Workflow.chain(lambda agent: 1).parameters == ()
    with pytest.raises(cd.WorkflowError, match="missing input 'question'.*nodes 'plan', 'answer'"):
        wf.validate(inputs={})
    wf.validate()   # the workflow itself is fine: its inputs come with a run


def test_inputs_reach_every_node_that_takes_them(engine, agent):
    wf = qa_workflow()
    wf.add(record, name="everything")                       # a root taking **inputs gets them all
    wf.add(lambda agent, answer: answer.upper(), name="shout", after=["answer"])   # takes none
    out = engine.submit(wf, agent, inputs={"question": "why?"}).result(timeout=30)
    assert out["plan"].value == "plan for 'why?'"
    assert out["answer"].value == "plain answer to 'why?' after plan for 'why?'"   # not a root, still given it
    assert out["everything"].value == ["question"]
    assert out["shout"].value.startswith("PLAIN ANSWER")
    polite = engine.submit(wf, agent, inputs={"question": "how?", "tone": "polite"}).result(timeout=30)
    assert polite["answer"].value.startswith("polite answer to 'how?'")


def test_a_fallback_gets_the_parameters_it_names(engine, agent):
    def offline(agent, error, plan, question):
        return f"offline answer to {question!r}"

    def down(agent, plan):
        raise ConnectionError("model down")

    wf = cd.Workflow()
    wf.add(plan)
    wf.add(down, name="ask", after=["plan"], fallback=offline)
    assert wf.parameters == ("question",)
    out = engine.submit(wf, agent, inputs={"question": "why?"}).result(timeout=30)
    assert out["ask"].status == "fell_back" and out["ask"].value == "offline answer to 'why?'"


@pytest.mark.parametrize("inputs, message", [
    (None, "workflow 'qa': missing input 'question': a required parameter (of nodes 'plan', 'answer'); "
           "give it in inputs={'question': ...}"),
    ({"question": "?", "colour": "red"}, "workflow 'qa': unknown input 'colour': no node takes it "
                                         "(parameters: question, tone)"),
    ({"question": "?", 3: "x"}, "input name 3 is not a parameter name"),
    (["question"], "inputs must be a mapping of parameter name to value, got list"),
])
def test_bad_inputs_are_refused_before_anything_is_submitted(engine, agent, inputs, message):
    before = len(engine.runs_in_memory)
    with pytest.raises(cd.WorkflowError) as err:
        engine.submit(qa_workflow(), agent, inputs=inputs)
    assert message in str(err.value)
    assert len(engine.runs_in_memory) == before


def test_a_single_task_takes_its_arguments_as_before(engine, agent):
    assert engine.run(lambda agent, x, y: x * y, agent, x=6, y=7).value == 42
    assert engine.run(record, agent, a=1, b=2).value == ["a", "b"]
    bad = engine.run(plan, agent, query="?")
    assert bad.status == "failed" and "unknown input 'query'" in str(bad.error)
    assert "missing input 'question'" in str(bad.error)
