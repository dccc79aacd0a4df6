"""Workflows: tasks as nodes of a networkx DAG, validated before anything runs."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx

from ._errors import WorkflowError
from ._task import TaskSpec, as_spec
from ._trigger import ALL_SUCCESS, check_trigger


@dataclass(frozen=True)
class Node:
    """One node: its name, task, parents (in the order they were given), condition, trigger."""

    name: str
    task: TaskSpec
    parents: tuple[str, ...] = ()
    when: Callable[..., Any] | None = None
    trigger: str = ALL_SUCCESS


class Workflow:
    """A DAG of tasks.  Children receive their parents' results as keyword arguments.

    >>> wf = Workflow()
    >>> a = wf.add(fetch)
    >>> wf.add(summarize, after=[a], when=lambda fetch: bool(fetch))
    """

    def __init__(self, name: str = "workflow"):
        self.name = name
        self._nodes: dict[str, Node] = {}

    # -- building -----------------------------------------------------------------------------
    def add(self, task: Any, name: str | None = None, *, after: Iterable[str] | str | None = (),
            when: Callable[..., Any] | None = None, trigger: str = ALL_SUCCESS, **options: Any) -> str:
        """Add ``task`` as a node (named after the function unless ``name``); return the name.

        ``after``: the parent nodes (a name, a list of names, or ``None``: none); ``when``: a predicate over the parents' results (by name)
        that must hold for the node to run; ``trigger``: ``all_success`` (default),
        ``all_done`` or ``one_failed``; other keyword options override the task's policies
        (``retries=``, ``timeout=``, ``fallback=``...).  Raises :class:`WorkflowError` on bad
        input and leaves the workflow as it was.
        """
        spec = as_spec(task)
        if options:
            spec = spec.with_options(**options)
        node_name = spec.name if name is None else name
        if not isinstance(node_name, str) or not node_name:
            raise WorkflowError(f"node name must be a non-empty string, got {node_name!r}")
        if node_name in self._nodes:
            raise WorkflowError(f"duplicate node name {node_name!r}: pass name=... to add the task twice")
        parents = parents_of(node_name, after)
        for p in parents:
            if p not in self._nodes:
                raise WorkflowError(f"node {node_name!r}: 'after' names unknown node {p!r}")
        if len(set(parents)) != len(parents):
            raise WorkflowError(f"node {node_name!r}: a parent is listed twice in 'after' {list(parents)}")
        if when is not None and not callable(when):
            raise WorkflowError(f"node {node_name!r}: 'when' must be callable, got {when!r}")
        check_trigger(trigger)
        node = Node(node_name, spec, parents, when, trigger)
        problems = node_problems(node)
        if problems:
            raise WorkflowError("; ".join(problems))
        self._nodes[node_name] = node
        return node_name

    @classmethod
    def from_networkx(cls, graph: nx.DiGraph, tasks: Mapping[str, Any] | None = None, *,
                      name: str = "workflow") -> Workflow:
        """Build a workflow from a directed graph; each node's task comes from ``tasks[node]`` or
        the node attribute ``task`` (``when`` and ``trigger`` attributes are honoured too).

        Raises :class:`WorkflowError` for a cycle (naming its nodes), a node without a task, or a
        task in ``tasks`` that names no node of the graph.
        """
        if not isinstance(graph, nx.DiGraph):
            raise WorkflowError(f"from_networkx needs a networkx DiGraph, got {type(graph).__name__}")
        tasks = dict(tasks or {})
        unknown = sorted(map(str, set(tasks) - set(graph.nodes)))
        if unknown:
            raise WorkflowError(f"tasks given for unknown node(s) {', '.join(map(repr, unknown))}, not in the graph")
        _check_acyclic(graph)
        missing = [n for n in graph.nodes if n not in tasks and "task" not in graph.nodes[n]]
        if missing:
            raise WorkflowError(f"node(s) without a task: {', '.join(map(repr, missing))}")
        wf = cls(name)
        for n in nx.lexicographical_topological_sort(graph, key=str) if _sortable(graph) else nx.topological_sort(graph):
            attrs = graph.nodes[n]
            wf.add(tasks.get(n, attrs.get("task")), name=str(n), after=[str(p) for p in graph.predecessors(n)],
                   when=attrs.get("when"), trigger=attrs.get("trigger", ALL_SUCCESS), **attrs.get("options", {}))
        return wf

    @classmethod
    def chain(cls, *tasks: Any, name: str = "chain") -> Workflow:
        """``chain(a, b, c)``: b runs after a succeeds, c after b."""
        wf = cls(name)
        prev: str | None = None
        for t in tasks:
            prev = wf.add(t, after=[prev] if prev else [])
        return wf

    # -- reading ------------------------------------------------------------------------------
    @property
    def nodes(self) -> Mapping[str, Node]:
        """The nodes by name, in the order they were added (a topological order)."""
        return self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def __iter__(self):
        return iter(self._nodes)

    def to_networkx(self) -> nx.DiGraph:
        """The workflow as a networkx DiGraph (node attribute ``node`` holds the :class:`Node`)."""
        g = nx.DiGraph()
        for n, node in self._nodes.items():
            g.add_node(n, node=node)
            g.add_edges_from((p, n) for p in node.parents)
        return g

    def children(self) -> dict[str, list[str]]:
        """Each node's children, by name."""
        out: dict[str, list[str]] = {n: [] for n in self._nodes}
        for n, node in self._nodes.items():
            for p in node.parents:
                out[p].append(n)
        return out

    def sinks(self) -> list[str]:
        """Nodes without children."""
        has_child = {p for node in self._nodes.values() for p in node.parents}
        return [n for n in self._nodes if n not in has_child]

    def descendants(self, names: Iterable[str]) -> list[str]:
        """All nodes downstream of ``names`` (excluded), in topological order."""
        children = self.children()
        seen: set[str] = set()
        stack = list(names)
        while stack:
            for c in children[stack.pop()]:
                if c not in seen:
                    seen.add(c)
                    stack.append(c)
        return [n for n in self._nodes if n in seen]

    def validate(self, inputs: Iterable[str] = ()) -> None:
        """Check the whole workflow again; raise :class:`WorkflowError` listing every problem.

        ``inputs``: names of keyword arguments given to the root nodes (``engine.run(t, a, x=1)``).
        """
        problems: list[str] = []
        given = tuple(inputs)
        for node in self._nodes.values():
            problems.extend(node_problems(node, given if not node.parents else ()))
            problems.extend(f"node {node.name!r}: 'after' names unknown node {p!r}"
                            for p in node.parents if p not in self._nodes)
        if not self._nodes:
            problems.append("the workflow has no nodes")
        if problems:
            raise WorkflowError("; ".join(problems))

    def visualize(self) -> Any:
        """A picture of the workflow (SVG with node names and edges; shown inline in notebooks)."""
        from ._visualize import visualize_workflow
        return visualize_workflow(self)

    def __repr__(self) -> str:
        edges = sum(len(n.parents) for n in self._nodes.values())
        return f"<cleo_dask.Workflow {self.name!r}: {len(self._nodes)} nodes, {edges} edges>"

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{n}</td><td>{node.task.name}</td><td>{', '.join(node.parents)}</td></tr>"
                       for n, node in list(self._nodes.items())[:50])
        more = f"<p>... {len(self._nodes) - 50} more</p>" if len(self._nodes) > 50 else ""
        return (f"<div><strong>Workflow {self.name}</strong> ({len(self._nodes)} nodes)"
                f"<table><tr><th>node</th><th>task</th><th>after</th></tr>{rows}</table>{more}</div>")


def parents_of(node: str, after: Any) -> tuple[str, ...]:
    """The parent names ``after`` gives for ``node``: a name, an iterable of names, or ``None``
    (no parents); :class:`WorkflowError` naming the node for anything else."""
    if after is None:
        return ()
    if isinstance(after, str):
        return (after,)
    if isinstance(after, (bytes, Mapping)) or not isinstance(after, Iterable):
        raise WorkflowError(f"node {node!r}: 'after' must be a node name, a list of node names or None, "
                            f"got {after!r}")
    parents = tuple(after)
    for p in parents:
        if not isinstance(p, str):
            hint = ""
            name = getattr(getattr(p, "spec", None), "name", None) or getattr(p, "__name__", None)
            if isinstance(name, str):
                hint = f" (pass the node's name, e.g. {name!r}: what wf.add returned)"
            raise WorkflowError(f"node {node!r}: 'after' must list node names (strings), got {p!r}{hint}")
    return parents


def node_problems(node: Node, inputs: tuple[str, ...] = ()) -> list[str]:
    """Why ``node``'s task (and its condition) cannot be called with its parents' results."""
    what = f"node {node.name!r} (task {node.task.name!r})"
    problems = node.task.signature.problems(node.parents + inputs, what)
    if node.when is not None:
        from ._task import Signature
        problems.extend(Signature.of(node.when, agent_first=False).problems(node.parents, f"condition 'when' of {what}"))
    if node.task.fallback is not None:
        problems.extend(node.task.fallback.signature.problems(node.parents + inputs, f"fallback of {what}"))
    return problems


def _sortable(graph: nx.DiGraph) -> bool:
    return all(isinstance(n, str) for n in graph.nodes)


def _check_acyclic(graph: nx.DiGraph) -> None:
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return
    names = [u for u, _ in cycle] + [cycle[0][0]]
    raise WorkflowError(f"the graph has a cycle: {' -> '.join(map(str, names))}")
