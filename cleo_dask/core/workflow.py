"""Workflows: tasks as nodes of a networkx DAG, validated before anything runs."""
from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any

import networkx as nx

from cleo_dask.errors import WorkflowError
from cleo_dask.util.gcpause import gc_paused
from cleo_dask.core.node import Node
from cleo_dask.core.nodecheck import NodeChecker
from cleo_dask.core.parameters import Parameter, check_inputs, parameter_table, takes_any_input
from cleo_dask.core.task import TaskSpec, as_spec
from cleo_dask.core.toposort import CycleFound, topological_order
from cleo_dask.failures.rules import ALL_SUCCESS, TRIGGER_RULES, check_trigger


class Workflow:
    """A DAG of tasks.  Children receive their parents' results as keyword arguments; any other
    argument a task names is a workflow parameter (:attr:`parameters`), given as the run's inputs.

    >>> wf = Workflow()
    >>> a = wf.add(fetch)
    >>> wf.add(summarize, after=[a], when=lambda fetch: bool(fetch))
    """

    _checked = 0   # (a workflow pickled before this attribute existed: every node is checked again)

    def __init__(self, name: str = "workflow"):
        if not isinstance(name, str) or not name:
            raise WorkflowError(f"a workflow's name must be a non-empty string, got {name!r}")
        self.name = name
        self._nodes: dict[str, Node] = {}
        self._params: dict[str, Parameter] | None = None   # computed when first asked for
        self._below: tuple[dict[str, list[str]], dict[str, int]] | None = None   # for descendants()
        self._checked = 0   # how many nodes (the first ones) passed every check of validate() when added

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
        problems = node_problems(node, known=self._nodes)
        if problems:
            raise WorkflowError("; ".join(problems))
        self._nodes[node_name] = node
        self._added(1)
        return node_name

    def map(self, task: Any, name: str | None = None, *, over: str, arg: str | None = None, **options: Any) -> str:
        """Add a mapped node: ``task`` runs once per element of ``over``'s result, as nodes
        ``"name[0]"``, ``"name[1]"``... made at run time (see :mod:`cleo_dask.core.mapping`); a
        node added ``after`` it receives the list of their results, in order, as ``name``.

        ``arg``: the argument each element is passed as (default ``item``, else one named like
        ``over``, else the task's one required argument); ``options`` override the item task's.
        """
        from cleo_dask.core.mapping import map_node
        spec = as_spec(task)
        node_name = spec.name if name is None else name
        if not isinstance(node_name, str) or not node_name:
            raise WorkflowError(f"node name must be a non-empty string, got {node_name!r}")
        if node_name in self._nodes:
            raise WorkflowError(f"duplicate node name {node_name!r}: pass name=... to add the task twice")
        if over not in self._nodes:
            raise WorkflowError(f"map node {node_name!r}: 'over' names unknown node {over!r}")
        self._nodes[node_name] = map_node(node_name, spec, over, arg, **options)
        self._added(1)
        return node_name

    def expand(self, name: str, items: list[Node], node: Node) -> None:
        """At run time (a run's own copy): put ``items`` before node ``name`` and replace it by
        ``node`` (a mapped node's items and gather), keeping the order topological."""
        nodes: dict[str, Node] = {}
        for n, old in self._nodes.items():
            if n == name:
                nodes.update((i.name, i) for i in items)
                old = node
            nodes[n] = old
        self._nodes = nodes
        self._checked = len(nodes)
        self._params = self._below = None

    def copy(self) -> Workflow:
        """A shallow copy (the same nodes): what a run expands at run time."""
        wf = Workflow(self.name)
        wf._nodes = dict(self._nodes)
        wf._checked, wf._params = self._checked, self._params
        if self.signals:
            wf.__dict__["_signals"] = dict(self.signals)
        return wf

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
        if tasks is not None and not isinstance(tasks, Mapping):
            raise WorkflowError(f"from_networkx: tasks must be a mapping node -> task (a dict), "
                                f"got {type(tasks).__name__}")
        tasks = dict(tasks or {})
        unknown = sorted(map(str, set(tasks).difference(graph.nodes)))
        if unknown:
            raise WorkflowError(f"tasks given for unknown node(s) {', '.join(map(repr, unknown))}, not in the graph")
        strings = all(type(n) is str for n in graph)
        try:
            with gc_paused():
                order = topological_order(graph, lexicographic=strings or all(isinstance(n, str) for n in graph))
        except CycleFound as found:
            names = found.cycle + found.cycle[:1]
            raise WorkflowError(f"the graph has a cycle: {' -> '.join(map(str, names))}") from None
        # (``tasks`` names only nodes of the graph: when it has as many, it names every one)
        missing = [] if len(tasks) == len(graph) else [
            n for n in graph.nodes if n not in tasks and "task" not in graph.nodes[n]]
        if missing:
            raise WorkflowError(f"node(s) without a task: {', '.join(map(repr, missing))}")
        wf = cls(name)
        with gc_paused():
            wf._add_ordered(graph, order, tasks, strings=strings)
        return wf

    def _add_ordered(self, graph: nx.DiGraph, order: list[Any], tasks: Mapping[Any, Any], strings: bool) -> None:
        """``graph``'s nodes in topological ``order``, as :meth:`add` would add them one by one (same
        checks, same errors), with each task's spec and signature worked out once, not per node.
        ``strings``: every node of ``graph`` is a ``str`` (its own name; no two can then collide)."""
        names = None if strings else {n: str(n) for n in order}
        nodes = self._nodes
        before = len(nodes)
        gnodes = dict(graph.nodes(data=True))                       # node -> its attributes
        predecessors = dict(nx.reverse_view(graph).adjacency()).__getitem__   # node -> its parents
        specs: dict[int, tuple[Any, TaskSpec, bool]] = {}   # id(task) -> (task, kept alive; spec; simple)
        checker = NodeChecker()
        last: tuple[Any, TaskSpec, bool] = (_MISSING, None, False)   # type: ignore[assignment]
        for n in order:
            attrs = gnodes[n]
            task = tasks.get(n, _MISSING)
            if task is _MISSING:
                task = attrs.get("task")
            if task is not last[0]:
                last = specs.get(id(task)) or last
                if last[0] is not task:
                    spec = as_spec(task)
                    last = specs[id(task)] = (task, spec, _simple(spec))
            spec, simple = last[1], last[2]
            when, trigger = None, ALL_SUCCESS
            if attrs:
                options = attrs.get("options")
                if options:
                    spec = spec.with_options(**options)
                    simple = _simple(spec)
                when, trigger = attrs.get("when"), attrs.get("trigger", ALL_SUCCESS)
            if names is None:
                node_name, parents = n, tuple(predecessors(n))
            else:
                node_name, parents = names[n], tuple([names[p] for p in predecessors(n)])
            if not node_name:
                raise WorkflowError(f"node name must be a non-empty string, got {node_name!r}")
            if (names is not None or before) and node_name in nodes:
                raise WorkflowError(f"duplicate node name {node_name!r}: pass name=... to add the task twice")
            if when is not None and not callable(when):
                raise WorkflowError(f"node {node_name!r}: 'when' must be callable, got {when!r}")
            if trigger is not ALL_SUCCESS and trigger not in TRIGGER_RULES:
                check_trigger(trigger)
            node = Node(node_name, spec, parents, when, trigger)
            if not simple or when is not None:
                problems = checker.problems(node, known=nodes)
                if problems:
                    raise WorkflowError("; ".join(problems))
            nodes[node_name] = node
        self._added(len(nodes) - before)

    def _added(self, count: int) -> None:
        """``count`` nodes were just added, each checked as :meth:`validate` would check it."""
        if self._checked == len(self._nodes) - count:
            self._checked = len(self._nodes)
        self._params = self._below = None

    @classmethod
    def chain(cls, *tasks: Any, name: str = "chain") -> Workflow:
        """``chain(a, b, c)``: b runs after a succeeds, c after b."""
        wf = cls(name)
        prev: str | None = None
        for t in tasks:
            prev = wf.add(t, after=[prev] if prev else [])
        return wf

    def add_signal(self, name: str, *, after: Iterable[str] | str | None = (), timeout: float | None = None,
                   trigger: str = ALL_SUCCESS) -> str:
        """Add a node named ``name`` that is done when signal ``name`` arrives (its value is the
        signal's value), once its parents (``after``) are done: ``engine.signal(run.id, name, value)``.
        Held on the scheduler while it waits (holding no worker); past ``timeout`` seconds without
        the signal it fails (:class:`~cleo_dask.core.signal.SignalTimeout`, trigger rules apply)."""
        from cleo_dask.core.signal import signal_spec
        node = self.add(signal_spec(name, timeout), name, after=after, trigger=trigger)
        self.__dict__.setdefault("_signals", {})[node] = timeout
        return node

    @property
    def signals(self) -> Mapping[str, float | None]:
        """The signal nodes (:meth:`add_signal`): name -> timeout."""
        return self.__dict__.get("_signals", {})

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

    @gc_paused()   # a list per node, none of them garbage: no full collection walks them meanwhile
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

    def descendants(self, names: Iterable[str], avoid: Container[str] = ()) -> list[str]:
        """All nodes downstream of ``names`` (excluded), in topological order.  Nodes in ``avoid``
        are neither returned nor walked through: what lies below only them is left out."""
        if self._below is None:   # computed once (a run asks on every failure), until a node is added
            self._below = (self.children(), {n: i for i, n in enumerate(self._nodes)})
        children, position = self._below
        seen: set[str] = set()
        stack = list(names)
        while stack:
            for c in children[stack.pop()]:
                if c not in seen and c not in avoid:
                    seen.add(c)
                    stack.append(c)
        if len(seen) * 16 < len(position):   # a few: sorted, rather than a walk over every node
            return sorted(seen, key=position.__getitem__)
        return [n for n in self._nodes if n in seen]

    @property
    def parameters(self) -> tuple[str, ...]:
        """The workflow's parameters: names of task arguments that no parent provides, in order of
        first appearance (required ones and optional ones, whose tasks all give a default)."""
        return tuple(self._parameter_table())

    @property
    def required_parameters(self) -> tuple[str, ...]:
        """The parameters some task takes without a default: a run must be given them."""
        return tuple(n for n, p in self._parameter_table().items() if p.required)

    def _parameter_table(self) -> dict[str, Parameter]:
        if self._params is None:
            self._params = parameter_table(self._nodes.values())
        return self._params

    def check_inputs(self, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        """``inputs`` as a dict if they fit :attr:`parameters` (every required one given, none
        unknown unless a root takes ``**inputs``); else a :class:`WorkflowError` naming them."""
        return check_inputs(self.name, self._parameter_table(), takes_any_input(self._nodes.values()), inputs)

    def validate(self, inputs: Mapping[str, Any] | Iterable[str] | None = None) -> None:
        """Check the whole workflow again; raise :class:`WorkflowError` listing every problem.

        ``inputs``: the run's inputs (or their names): checked against :attr:`parameters` too.
        """
        problems: list[str] = []
        checker, nodes = NodeChecker(), self._nodes
        # every node added through add() / from_networkx() was checked then, parents included
        for node in nodes.values() if self._checked != len(nodes) else ():
            if node.when is not None or not _simple(node.task):
                problems.extend(checker.problems(node))
            for p in node.parents:
                if p not in nodes:
                    problems.append(f"node {node.name!r}: 'after' names unknown node {p!r}")
        if not self._nodes:
            problems.append("the workflow has no nodes")
        if problems:
            raise WorkflowError("; ".join(problems))
        if inputs is not None:
            self.check_inputs(inputs if isinstance(inputs, Mapping) else dict.fromkeys(inputs))

    def visualize(self) -> Any:
        """A picture of the workflow (SVG with node names and edges; shown inline in notebooks)."""
        from cleo_dask.core.picture import draw_workflow
        return draw_workflow(self)

    def __repr__(self) -> str:
        edges = sum(len(n.parents) for n in self._nodes.values())
        params = f", parameters: {', '.join(self.parameters)}" if self.parameters else ""
        return f"<cleo_dask.Workflow {self.name!r}: {len(self._nodes)} nodes, {edges} edges{params}>"

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


def node_problems(node: Node, known: Mapping[str, Node] | None = None) -> list[str]:
    """Why ``node``'s task (and its condition) cannot be called with its parents' results (other
    arguments are workflow parameters); ``known``: the nodes before it, to catch a forgotten
    ``after`` (a required argument named like a node that is not a parent)."""
    return NodeChecker().problems(node, known)


_MISSING = object()


def _simple(spec: TaskSpec) -> bool:
    """Whether any node of ``spec`` without a condition is fine whatever its parents (the task takes
    the agent and ``**inputs``, requires nothing else, has no fallback)."""
    sig = spec.signature
    return spec.fallback is None and sig.takes_agent and sig.var_keyword and not sig.required

