"""Workflow parameters: the task arguments no parent provides, given as a run's ``inputs``.

A node's task is called with its parents' results by name; every other named argument it takes is
a *parameter* of the workflow, given with ``Engine.submit(wf, agent, inputs={...})`` (also a spec's
``inputs:``, ``cleo-dask run --input``, a schedule's ``inputs=``).  A parameter is optional when
every task taking it declares a default.  Each node receives the parameters it names (roots and
inner nodes alike, and fallbacks too); a root taking ``**inputs`` receives every input.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cleo_dask.errors import WorkflowError

if TYPE_CHECKING:
    from cleo_dask.core.node import Node


@dataclass
class Parameter:
    """One parameter: whether some task requires it, and the nodes taking it (in order)."""

    name: str
    required: bool = False
    nodes: list[str] = field(default_factory=list)


def node_parameters(node: Node) -> list[tuple[str, bool]]:
    """``(name, required)`` for each parameter ``node`` takes (its task's, then its fallback's)."""
    out: dict[str, bool] = {}
    for spec in (node.task, node.task.fallback):
        if spec is None:
            continue
        sig = spec.signature
        for name in sig.ordered():
            if name not in node.parents:
                out[name] = out.get(name, False) or name in sig.required
    return list(out.items())


def parameter_table(nodes: Iterable[Node]) -> dict[str, Parameter]:
    """The parameters of a workflow's nodes, in order of first appearance."""
    table: dict[str, Parameter] = {}
    for node in nodes:
        for name, required in node_parameters(node):
            p = table.setdefault(name, Parameter(name))
            p.required = p.required or required
            p.nodes.append(node.name)
    return table


def _takes_all(node: Node) -> bool:
    """A root whose task (or fallback) takes ``**inputs``: it receives every input."""
    return not node.parents and any(s is not None and s.signature.var_keyword
                                    for s in (node.task, node.task.fallback))


def takes_any_input(nodes: Iterable[Node]) -> bool:
    """Whether a root takes ``**inputs`` (then any input name is accepted: it receives them all)."""
    return any(_takes_all(n) for n in nodes)


def receives_inputs(node: Node, names: Iterable[str]) -> bool:
    """Whether ``node`` is handed some of the inputs ``names``."""
    if _takes_all(node):
        return True
    wanted = {name for name, _ in node_parameters(node)}
    return any(n in wanted for n in names)


def check_inputs(name: str, table: Mapping[str, Parameter], any_input: bool, inputs: Any) -> dict[str, Any]:
    """``inputs`` as a dict if they fit the parameters in ``table``; else a :class:`WorkflowError`
    naming each missing required parameter and each unknown input (workflow ``name``)."""
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, Mapping):
        raise WorkflowError(f"workflow {name!r}: inputs must be a mapping of parameter name to value, "
                            f"got {type(inputs).__name__}")
    problems = []
    for key in inputs:
        if not isinstance(key, str) or not key:
            problems.append(f"input name {key!r} is not a parameter name (a non-empty string)")
        elif key not in table and not any_input:
            known = ", ".join(table) or "none"
            problems.append(f"unknown input {key!r}: no node takes it (parameters: {known})")
    for p in table.values():
        if p.required and p.name not in inputs:
            takers = ", ".join(map(repr, p.nodes[:3])) + (", ..." if len(p.nodes) > 3 else "")
            problems.append(f"missing input {p.name!r}: a required parameter (of node{'s' if len(p.nodes) > 1 else ''} "
                            f"{takers}); give it in inputs={{{p.name!r}: ...}}")
    if problems:
        raise WorkflowError(f"workflow {name!r}: " + "; ".join(problems))
    return dict(inputs)
