"""A spec file's ``nodes``: each node's fields checked, then the workflow built from the valid ones.

The node's own fields (``name``, ``task``, ``after``, ``when``, ``map``: the node it maps over,
see :meth:`Workflow.map`) are read here; its options
(``trigger``, ``retries``, ``timeout``, ...) by the policies that own them (:mod:`cleo_dask.core.options`).
"""
from __future__ import annotations

import itertools
from typing import Any

import networkx as nx

from cleo_dask.core.options import FILE_OPTIONS, read_options
from cleo_dask.core.specproblems import Problems, SpecField, Where, import_path, line_of, unknown_keys
from cleo_dask.core.specread import LineMap
from cleo_dask.core.specsignal import read_signal, signal_name
from cleo_dask.core.task import TaskSpec, as_spec
from cleo_dask.core.toposort import CycleFound, topological_order
from cleo_dask.core.workflow import Workflow
from cleo_dask.errors import WorkflowError
from cleo_dask.util.options import not_callable

#: The keys of a node in a spec file: its own fields, then the options of its policies.
NODE_KEYS = ("name", "task", "after", "when") + FILE_OPTIONS
#: The key of a mapped node (``map: node``, instead of ``after``; see :meth:`Workflow.map`).
MAP_KEY = "map"

#: A node as read: its location, the keyword arguments for ``Workflow.add``, whether all its
#: fields were valid, and the raw mapping.
Checked = tuple[Where, dict[str, Any], bool, Any]


def read_nodes(data: Any, where: Where, problems: Problems) -> dict[str, Checked]:
    """Every node of ``nodes:`` (a list or a mapping name -> node), checked, by name in file order."""
    return {name: (w, *node_fields(raw, w, problems, name), raw) for name, w, raw in _entries(data, where, problems)}


def node_fields(data: dict[str, Any], where: Where, problems: Problems,
                name: str | None = None) -> tuple[dict[str, Any], bool]:
    """Check one node's fields: the keyword arguments for ``Workflow.add`` and whether all were valid."""
    before = len(problems.items)
    unknown_keys(data, NODE_KEYS + (MAP_KEY, "signal"), where, problems)   # signal: in place of task (core/specsignal)
    out: dict[str, Any] = {}

    def at(key: str) -> Where:
        return where.at(key, data)

    if "signal" in data:   # a signal node (core/specsignal): Workflow.add_signal, no task
        if "task" in data:
            problems.add(at("task"), "a node has either 'task' or 'signal', not both")
        out["signal"] = read_signal(name or "", data, where, problems)
    elif "task" not in data:
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
        out["when"] = import_path(data["when"], at("when"), problems, not_callable)
    if "map" in data:
        if not isinstance(data["map"], str) or not data["map"]:
            problems.add(at("map"), f"must be the name of the node to map over, got {data['map']!r}")
        elif after or data.get("when") is not None:
            problems.add(at("map"), "a mapped node takes no 'after' nor 'when': its one parent is the node it maps over")
        else:
            out["map"] = data["map"]
    out.update(read_options(data, SpecField(where, problems)))
    return out, len(problems.items) == before


def _task_spec(path: Any, where: Where, problems: Problems) -> TaskSpec | None:
    obj = import_path(path, where, problems)
    if obj is None:
        return None
    if id(obj) not in problems.specs:
        try:
            problems.specs[id(obj)] = (obj, as_spec(obj))
        except WorkflowError as exc:
            problems.add(where, f"import path {path!r} is not a task: {exc}")
            return None
    return problems.specs[id(obj)][1]


def _entries(data: Any, where: Where, problems: Problems) -> list[tuple[str, Where, dict[str, Any]]]:
    """The nodes as (name, location, raw mapping), in file order; problems for malformed entries."""
    out: list[tuple[str, Where, dict[str, Any]]] = []
    seen: set[str] = set()
    if isinstance(data, dict):
        entries = []
        for name, node in data.items():
            w = Where(where.file, ("nodes", str(name)), data.lines.get(name) if isinstance(data, LineMap) else where.line)
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
            if name is None and isinstance(node, dict):
                name = signal_name(node.get("signal"))
            label = name if isinstance(name, str) and name else f"#{i + 1}"
            entries.append((label, Where(where.file, ("nodes", label), line_of(node) or where.line), node))
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


def build(name: str, checked: dict[str, Checked], problems: Problems) -> Workflow | None:
    """The workflow from checked nodes: unknown parents and cycles reported, valid nodes added in order.

    Nodes with invalid fields (already reported) and their descendants are left out, so that the
    remaining nodes are still checked (signatures against parents) and every problem is reported.
    """
    graph = nx.DiGraph()
    graph.add_nodes_from(checked)
    for n, (w, fields, _, raw) in checked.items():
        key = "map" if "map" in fields else "after"
        for parent in [fields["map"]] if "map" in fields else fields.get("after", []):
            if parent not in checked:
                problems.add(w.at(key, raw), f"{key!r} names unknown node {parent!r}")
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
        over = fields.get("map")
        if not ok or not all(p in wf for p in fields.get("after", [])) or (over is not None and over not in wf):
            continue
        fields = dict(fields)
        try:
            if "signal" in fields:
                wf.add_signal(n, after=fields["after"], timeout=fields["signal"]["timeout"],
                              **{k: v for k, v in fields.items() if k == "trigger"})
            elif over is not None:
                task = fields.pop("task")
                fields.pop("map")
                fields.pop("after", None)
                wf.map(task, name=n, over=over, **fields)
            else:
                wf.add(fields.pop("task"), name=n, **fields)
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
