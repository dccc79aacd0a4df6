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
import itertools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from cleo_dask.core.agent import Agent
from cleo_dask.failures.backoff import Backoff, exponential, fixed
from cleo_dask.errors import WorkflowError
from cleo_dask.util.imports import resolve
from cleo_dask.util.numbers import count, finite_number, seconds
from cleo_dask.core.specread import MISSING as _MISSING, LineMap as _Map, read as _read
from cleo_dask.core.parameters import takes_any_input
from cleo_dask.core.task import TaskSpec, as_spec
from cleo_dask.core.toposort import CycleFound, topological_order
from cleo_dask.failures.rules import TRIGGER_RULES
from cleo_dask.core.workflow import Workflow

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
TOP_KEYS = ("name", "agent", "nodes", "priority", "fail_fast", "inputs")
AGENT_KEYS = ("id", "config", "max_concurrency")
NODE_KEYS = ("name", "task", "after", "when", "trigger", "retries", "backoff", "retry_on", "timeout",
             "fallback", "on_error", "io_bound", "rate_limit", "duration")
EXPONENTIAL_KEYS = ("first", "factor", "max", "jitter")


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
    problems = _Problems(target)
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


def load_agent(path: str | os.PathLike[str], *, problems: _Problems | None = None) -> Agent:
    """An :class:`Agent` from a YAML or JSON file (``id``, ``config``, ``max_concurrency``)."""
    path = os.fspath(path)
    own = problems is None
    probs = _Problems(path) if own else problems
    agent = None
    data = _read(path, probs, what="agent file")
    if data is not _MISSING:
        agent = _agent(data, _Where(path, (), _line(data)), probs)
    if own:
        probs.raise_if_any()
    return agent  # type: ignore[return-value]


# -- problems and their locations -------------------------------------------------------------------
@dataclass(frozen=True)
class _Where:
    file: str
    path: tuple[str, ...]
    line: int | None = None

    def at(self, key: Any, container: Any = None) -> _Where:
        line = container.lines.get(key, self.line) if isinstance(container, _Map) else self.line
        return _Where(self.file, self.path + (str(key),), line)


class _Problems:
    def __init__(self, source: str):
        self.source = source
        self.items: list[str] = []
        self.specs: dict[int, tuple[Any, TaskSpec]] = {}  # one TaskSpec per task object, for big specs

    def add(self, where: _Where | None, message: str, *, file: str | None = None, line: int | None = None) -> None:
        if where is not None:
            file, line = where.file, where.line if line is None else line
        loc = file or self.source
        if line is not None:
            loc += f":{line}"
        if where is not None and where.path:
            loc += f": {_describe(where.path)}"
        self.items.append(f"{loc}: {message}")

    def raise_if_any(self) -> None:
        if not self.items:
            return
        n = len(self.items)
        err = WorkflowError(f"{n} problem{'s' if n > 1 else ''} in {self.source}:\n"
                            + "\n".join(f"  - {p}" for p in self.items))
        err.problems = list(self.items)  # type: ignore[attr-defined]
        raise err


def _describe(path: tuple[str, ...]) -> str:
    """``('nodes', 'fetch', 'retries')`` -> ``node 'fetch', field 'retries'``."""
    if len(path) >= 2 and path[0] == "nodes":
        out = f"node {path[1]!r}"
        if len(path) > 2:
            out += f", field {'.'.join(path[2:])!r}"
        return out
    return f"field {'.'.join(path)!r}"


def _line(data: Any) -> int | None:
    return data.line if isinstance(data, _Map) else None


# -- the schema -------------------------------------------------------------------------------------
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _unknown_keys(data: dict[str, Any], known: tuple[str, ...], where: _Where, problems: _Problems) -> None:
    for key in data:
        if key not in known:
            problems.add(where.at(key, data), f"unknown key {key!r}; expected one of {', '.join(known)}")


def _import(path: Any, where: _Where, problems: _Problems, check: Callable[[Any], str | None] | None = None) -> Any:
    if not isinstance(path, str):
        problems.add(where, f"must be an import path 'package.module:name' (a string), got {path!r}")
        return None
    try:
        obj = resolve(path)
    except WorkflowError as exc:
        problems.add(where, str(exc))
        return None
    except Exception as exc:  # noqa: BLE001 - a module that fails while importing
        problems.add(where, f"import path {path!r}: importing it raised {type(exc).__name__}: {exc}")
        return None
    message = check(obj) if check else None
    if message:
        problems.add(where, f"import path {path!r} {message}")
        return None
    return obj


def _callable(obj: Any) -> str | None:
    return None if callable(obj) else f"is not callable ({type(obj).__name__})"


def _exception_class(obj: Any) -> str | None:
    return None if isinstance(obj, type) and issubclass(obj, BaseException) else "is not an exception class"


def _agent(data: Any, where: _Where, problems: _Problems) -> Agent | None:
    if isinstance(data, str):
        data = {"id": data}
    if not isinstance(data, dict):
        problems.add(where, f"the agent must be a mapping (id, config, max_concurrency) or an id, got {data!r}")
        return None
    _unknown_keys(data, AGENT_KEYS, where, problems)
    ok = True
    if not isinstance(data.get("id"), str) or not data.get("id"):
        problems.add(where.at("id", data), f"the agent's id must be a non-empty string, got {data.get('id')!r}")
        ok = False
    config = data.get("config", {})
    if config is None:
        config = {}
    if not isinstance(config, dict):
        problems.add(where.at("config", data), f"must be a mapping, got {config!r}")
        ok = False
    mc = data.get("max_concurrency")
    if mc is not None:
        try:
            count(mc, "", minimum=1)
        except WorkflowError as exc:
            problems.add(where.at("max_concurrency", data), str(exc))
            ok = False
    if not ok:
        return None
    return Agent(data["id"], dict(config), mc)


def _backoff(data: Any, where: _Where, problems: _Problems) -> Backoff | None:
    try:
        if _is_number(data):
            return fixed(data)
        if isinstance(data, dict) and len(data) == 1:
            kind, args = next(iter(data.items()))
            inner = where.at(kind, data)
            if kind == "fixed":
                if not _is_number(args):
                    problems.add(inner, f"fixed backoff must be a number of seconds, got {args!r}")
                    return None
                return fixed(args)
            if kind == "exponential":
                args = {} if args is None else args
                if not isinstance(args, dict):
                    problems.add(inner, f"must be a mapping of {', '.join(EXPONENTIAL_KEYS)}, got {args!r}")
                    return None
                bad = [k for k in args if k not in EXPONENTIAL_KEYS]
                for k in bad:
                    problems.add(inner.at(k, args), f"unknown key {k!r}; expected one of {', '.join(EXPONENTIAL_KEYS)}")
                return None if bad else exponential(**args)
        problems.add(where, "backoff must be seconds, {fixed: SECONDS} or "
                            f"{{exponential: {{first, factor, max, jitter}}}}, got {data!r}")
    except WorkflowError as exc:
        problems.add(where, str(exc))
    return None


def _node_fields(data: dict[str, Any], where: _Where, problems: _Problems) -> tuple[dict[str, Any], bool]:
    """Check one node's fields: the keyword arguments for ``Workflow.add`` and whether all were valid."""
    before = len(problems.items)
    _unknown_keys(data, NODE_KEYS, where, problems)
    out: dict[str, Any] = {}

    def at(key: str) -> _Where:
        return where.at(key, data)

    if "task" not in data:
        problems.add(where, "missing required field 'task' (an import path 'package.module:function')")
    else:
        out["task"] = _task_spec(data["task"], at("task"), problems)
    after = data.get("after")
    if after is None:  # missing, or `after: null`: no parents
        after = []
    elif isinstance(after, str):
        after = [after]
    if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
        problems.add(at("after"), f"must be a node name, a list of node names or null, got {data.get('after')!r}")
        after = []
    out["after"] = after
    if data.get("when") is not None:
        out["when"] = _import(data["when"], at("when"), problems, _callable)
    if "trigger" in data:
        if data["trigger"] not in TRIGGER_RULES:
            problems.add(at("trigger"), f"unknown trigger rule {data['trigger']!r}; expected one of {', '.join(TRIGGER_RULES)}")
        else:
            out["trigger"] = data["trigger"]
    if "retries" in data:
        _checked(out, "retries", lambda v: count(v, ""), data, at("retries"), problems)
    if "backoff" in data:
        out["backoff"] = _backoff(data["backoff"], at("backoff"), problems)
    if "retry_on" in data:
        paths = data["retry_on"]
        paths = [paths] if isinstance(paths, str) else paths
        if not isinstance(paths, list) or not paths:
            problems.add(at("retry_on"), f"must be an import path or a list of them, got {data['retry_on']!r}")
        else:
            classes = [_import(p, at("retry_on"), problems, _exception_class) for p in paths]
            out["retry_on"] = tuple(classes)
    for key in ("timeout", "duration"):
        if key in data and data[key] is not None:
            _checked(out, key, lambda v, k=key: seconds(v, "", positive=k == "timeout"), data, at(key), problems)
    for key in ("fallback", "on_error"):
        if data.get(key) is not None:
            out[key] = _import(data[key], at(key), problems, _callable)
    if "io_bound" in data:
        if not isinstance(data["io_bound"], bool):
            problems.add(at("io_bound"), f"must be true or false, got {data['io_bound']!r}")
        else:
            out["io_bound"] = data["io_bound"]
    if data.get("rate_limit") is not None:
        if not isinstance(data["rate_limit"], str):
            problems.add(at("rate_limit"), f"must be a string such as '10/minute', got {data['rate_limit']!r}")
        else:
            out["rate_limit"] = data["rate_limit"]
    return out, len(problems.items) == before


def _checked(out: dict[str, Any], key: str, check: Callable[[Any], Any], data: dict[str, Any], where: _Where,
             problems: _Problems) -> None:
    """``out[key] = data[key]`` if ``check`` accepts it, else its message is a problem at ``where``."""
    try:
        check(data[key])
    except WorkflowError as exc:
        problems.add(where, str(exc))
    else:
        out[key] = data[key]


def _task_spec(path: Any, where: _Where, problems: _Problems) -> TaskSpec | None:
    obj = _import(path, where, problems)
    if obj is None:
        return None
    if id(obj) not in problems.specs:
        try:
            problems.specs[id(obj)] = (obj, as_spec(obj))
        except WorkflowError as exc:
            problems.add(where, f"import path {path!r} is not a task: {exc}")
            return None
    return problems.specs[id(obj)][1]


def _nodes(data: Any, where: _Where, problems: _Problems) -> list[tuple[str, _Where, dict[str, Any]]]:
    """The nodes as (name, location, raw mapping), in file order; problems for malformed entries."""
    out: list[tuple[str, _Where, dict[str, Any]]] = []
    seen: set[str] = set()
    if isinstance(data, dict):
        entries = []
        for name, node in data.items():
            w = _Where(where.file, ("nodes", str(name)), data.lines.get(name) if isinstance(data, _Map) else where.line)
            if isinstance(node, dict) and "name" in node:
                problems.add(w.at("name", node), "a node of a 'nodes' mapping is named by its key; remove 'name'")
                node = {k: v for k, v in node.items() if k != "name"}
            entries.append((name, w, node))
    elif isinstance(data, list):
        entries = []
        for i, node in enumerate(data):
            name = node.get("name") if isinstance(node, dict) else None
            if name is None and isinstance(node, dict) and isinstance(node.get("task"), str):
                name = node["task"].rpartition(":")[2].rpartition(".")[2] or None
            label = name if isinstance(name, str) and name else f"#{i + 1}"
            entries.append((label, _Where(where.file, ("nodes", label), _line(node) or where.line), node))
            if isinstance(node, dict) and "name" in node and (not isinstance(name, str) or not name):
                problems.add(entries[-1][1].at("name", node), f"must be a non-empty string, got {name!r}")
    else:
        problems.add(where, f"'nodes' must be a list of nodes or a mapping name -> node, got {data!r}")
        return out
    if not entries:
        problems.add(where, "'nodes' is empty: a workflow needs at least one node")
    for name, w, node in entries:
        if not isinstance(name, str) or not name:
            problems.add(w, f"a node name must be a non-empty string, got {name!r}")
            continue
        if not isinstance(node, dict):
            problems.add(w, f"a node must be a mapping (task, after, when, ...), got {node!r}")
            continue
        if name in seen:
            problems.add(w, f"duplicate node name {name!r}")
            continue
        seen.add(name)
        out.append((name, w, node))
    return out


def _load_file(path: str, agent: Agent | None, problems: _Problems) -> Spec | None:
    data = _read(path, problems)
    if data is _MISSING:
        return None
    top = _Where(path, (), _line(data))
    if not isinstance(data, dict):
        problems.add(top, f"a spec must be a mapping with 'agent' and 'nodes', got {type(data).__name__}")
        return None
    _unknown_keys(data, TOP_KEYS, top, problems)
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
            agent = _agent(data["agent"], top.at("agent", data), problems)
        else:
            agent = Agent("default")
    if "nodes" not in data:
        problems.add(top, "missing required key 'nodes'")
        return None
    nodes = _nodes(data["nodes"], top.at("nodes", data), problems)
    checked = {name: (w, *_node_fields(raw, w, problems), raw) for name, w, raw in nodes}
    wf = _build(name, checked, problems)
    inputs = _inputs(data, top, wf, problems)
    if problems.items or agent is None or wf is None:
        return None
    return Spec(wf, agent, path, priority, bool(fail_fast), inputs)


def _inputs(data: dict[str, Any], top: _Where, wf: Workflow | None, problems: _Problems) -> dict[str, Any]:
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


def _build(name: str, checked: dict[str, tuple[_Where, dict[str, Any], bool, Any]], problems: _Problems) -> Workflow | None:
    """The workflow from checked nodes: unknown parents and cycles reported, valid nodes added in order.

    Nodes with invalid fields (already reported) and their descendants are left out, so that the
    remaining nodes are still checked (signatures against parents) and every problem is reported.
    """
    graph = nx.DiGraph()
    graph.add_nodes_from(checked)
    for n, (w, fields, _, raw) in checked.items():
        for parent in fields.get("after", []):
            if parent not in checked:
                problems.add(w.at("after", raw), f"'after' names unknown node {parent!r}")
            elif parent == n:
                problems.add(w.at("after", raw), "a node cannot come after itself")
            else:
                graph.add_edge(parent, n)
    try:
        topological_order(graph, lexicographic=False)   # linear; the cycles are only listed if there are some
        cycles: list[list[str]] = []
    except CycleFound:
        cycles = list(itertools.islice(nx.simple_cycles(graph), 5))
    for cycle in cycles:
        i = cycle.index(min(cycle))
        cycle = cycle[i:] + cycle[:i]
        problems.add(checked[cycle[0]][0], f"the graph has a cycle: {' -> '.join(cycle + [cycle[0]])}")
    if cycles:
        return None
    wf = Workflow(name)
    order = {n: i for i, n in enumerate(checked)}
    for n in nx.lexicographical_topological_sort(graph, key=order.__getitem__):
        w, fields, ok, _ = checked[n]
        if not ok or not all(p in wf for p in fields.get("after", [])):
            continue
        fields = dict(fields)
        task = fields.pop("task")
        try:
            wf.add(task, name=n, **fields)
        except WorkflowError as exc:
            problems.add(w, str(exc))
    if problems.items:
        return None
    try:
        wf.validate()
    except WorkflowError as exc:
        problems.add(None, str(exc))
        return None
    return wf


def _load_target(target: str, agent: Agent | None, problems: _Problems) -> Spec | None:
    """``package.module:name``: a Workflow, or a function that returns one when called with no arguments."""
    where = _Where(target, ())
    obj = _import(target, where, problems)
    if obj is None:
        return None
    if not isinstance(obj, Workflow) and callable(obj):
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
