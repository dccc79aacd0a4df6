"""Workflow spec files (YAML or JSON): data naming an agent and nodes, validated completely first.

A spec is data only: tasks, conditions, fallbacks and exception classes are import paths
(``"package.module:name"``) resolved with importlib; nothing is ``eval``'ed or unpickled.  Every
problem is collected (schema, import paths, graph) and reported at once, each with its location,
in one :class:`WorkflowError` whose ``problems`` attribute lists them::

    name: research
    agent: {id: researcher-1, config: {topic: dask}}
    inputs: {language: en}        # default values of workflow parameters (see Workflow.parameters)
    nodes:
      - name: fetch
        task: mypkg.tasks:fetch
        retries: 2
        backoff: {exponential: {first: 1, factor: 2, max: 60, jitter: 0.1}}
        retry_on: [builtins:ConnectionError]
      - name: summarize
        task: mypkg.tasks:summarize
        after: [fetch]
        when: mypkg.tasks:has_results
        timeout: 30
        fallback: mypkg.tasks:short_summary

``nodes`` may also be a mapping from node name to node.
"""
from __future__ import annotations

import gc
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cleo_dask.core.agent import Agent
from cleo_dask.core.agentfile import AGENT_KEYS, load_agent, read_agent
from cleo_dask.core.parameters import takes_any_input
from cleo_dask.core.specnodes import NODE_KEYS, build, read_nodes
from cleo_dask.core.specproblems import Problems, Where, import_path, line_of, unknown_keys
from cleo_dask.core.specread import MISSING, read
from cleo_dask.core.targets import is_factory
from cleo_dask.core.workflow import Workflow
from cleo_dask.errors import WorkflowError
from cleo_dask.failures.backoff import EXPONENTIAL_KEYS
from cleo_dask.util.numbers import finite_number

__all__ = ["AGENT_KEYS", "EXPONENTIAL_KEYS", "NODE_KEYS", "SPEC_SUFFIXES", "TOP_KEYS", "Spec", "load_agent",
           "load_spec", "spec_from_data"]

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
TOP_KEYS = ("name", "agent", "nodes", "priority", "fail_fast", "inputs")


@dataclass(frozen=True)
class Spec:
    """A loaded, fully validated spec: what ``Engine.submit`` needs.  ``inputs``: the spec's
    default values of the workflow's parameters (``cleo-dask run --input`` overrides them)."""

    workflow: Workflow
    agent: Agent
    source: str
    priority: float = 0
    fail_fast: bool = False
    inputs: Mapping[str, Any] = field(default_factory=dict)


def load_spec(target: str | os.PathLike[str], *, agent_file: str | os.PathLike[str] | None = None) -> Spec:
    """Load a spec file, or a ``package.module:name`` naming a Workflow (or a function returning one).

    ``agent_file`` (YAML or JSON with ``id``, ``config``, ``max_concurrency``) gives the agent,
    overriding the spec's own.  Raises :class:`WorkflowError` listing every problem found.
    """
    target = os.fspath(target)
    problems = Problems(target)
    agent = None
    paused = gc.isenabled()
    gc.disable()  # many small objects and no cycles: the cyclic GC would only slow big specs down
    try:
        if agent_file is not None:
            agent = load_agent(agent_file, problems=problems)
        if os.path.isfile(target):
            spec = _load_file(target, agent, problems)
        elif target.endswith(SPEC_SUFFIXES) or os.sep in target or ":" not in target:
            problems.add(None, f"no such spec file: {target}")
            spec = None
        else:
            spec = _load_target(target, agent, problems)
    finally:
        if paused:
            gc.enable()
    problems.raise_if_any()
    assert spec is not None
    return spec


def spec_from_data(data: Any, source: str = "<spec>", *, agent: Agent | None = None) -> Spec:
    """A spec document already read (a mapping, e.g. from a JSON request), validated as a spec
    file is; ``source`` names it in the :class:`WorkflowError` listing every problem."""
    problems = Problems(source)
    spec = _load_data(data, source, agent, problems)
    problems.raise_if_any()
    assert spec is not None
    return spec


def _load_file(path: str, agent: Agent | None, problems: Problems) -> Spec | None:
    data = read(path, problems)
    if data is MISSING:
        return None
    return _load_data(data, path, agent, problems)


def _load_data(data: Any, path: str, agent: Agent | None, problems: Problems) -> Spec | None:
    top = Where(path, (), line_of(data))
    if not isinstance(data, dict):
        problems.add(top, f"a spec must be a mapping with 'agent' and 'nodes', got {type(data).__name__}")
        return None
    unknown_keys(data, TOP_KEYS, top, problems)
    name = data.get("name", os.path.splitext(os.path.basename(path))[0])
    if not isinstance(name, str) or not name:
        problems.add(top.at("name", data), f"must be a non-empty string, got {name!r}")
        name = "workflow"
    priority = data.get("priority", 0)
    try:
        finite_number(priority, "")
    except WorkflowError as exc:
        problems.add(top.at("priority", data), str(exc))
        priority = 0
    fail_fast = data.get("fail_fast", False)
    if not isinstance(fail_fast, bool):
        problems.add(top.at("fail_fast", data), f"must be true or false, got {fail_fast!r}")
    if agent is None:
        if "agent" in data:
            agent = read_agent(data["agent"], top.at("agent", data), problems)
        else:
            agent = Agent("default")
    if "nodes" not in data:
        problems.add(top, "missing required key 'nodes'")
        return None
    checked = read_nodes(data["nodes"], top.at("nodes", data), problems)
    wf = build(name, checked, problems)
    inputs = _inputs(data, top, wf, problems)
    if problems.items or agent is None or wf is None:
        return None
    return Spec(wf, agent, path, priority, bool(fail_fast), inputs)


def _inputs(data: dict[str, Any], top: Where, wf: Workflow | None, problems: Problems) -> dict[str, Any]:
    """The spec's ``inputs:`` (parameter name -> value): each one a parameter of the workflow."""
    raw = data.get("inputs")
    if raw is None:
        return {}
    where = top.at("inputs", data)
    if not isinstance(raw, dict):
        problems.add(where, f"must be a mapping of workflow parameter name to value, got {raw!r}")
        return {}
    known = wf.parameters if wf is not None else None
    for key in raw:
        if not isinstance(key, str) or not key:
            problems.add(where.at(key, raw), f"{key!r} is not a parameter name (a non-empty string)")
        elif known is not None and key not in known and not takes_any_input(wf.nodes.values()):
            problems.add(where.at(key, raw), f"unknown input {key!r}: no node takes it "
                                             f"(parameters: {', '.join(known) or 'none'})")
    return {k: v for k, v in raw.items()}


def _load_target(target: str, agent: Agent | None, problems: Problems) -> Spec | None:
    """``package.module:name``: a Workflow, a function that returns one when called with no arguments, or a
    task (``@cd.task`` or a function whose first parameter is ``agent``), run as a one-node workflow."""
    where = Where(target, ())
    obj = import_path(target, where, problems)
    if obj is None:
        return None
    if not isinstance(obj, Workflow) and callable(obj) and not is_factory(obj):
        obj = Workflow.chain(obj, name=target.rpartition(":")[2])   # a task, not a factory: one node
    if is_factory(obj):
        try:
            obj = obj()
        except Exception as exc:  # noqa: BLE001 - user code building the workflow
            problems.add(where, f"calling it to build the workflow raised {type(exc).__name__}: {exc}")
            return None
    if not isinstance(obj, Workflow):
        problems.add(where, f"must be a cleo_dask.Workflow or a function returning one, got {type(obj).__name__}")
        return None
    try:
        obj.validate()
    except WorkflowError as exc:
        problems.add(where, str(exc))
        return None
    return Spec(obj, agent or Agent("default"), target)

