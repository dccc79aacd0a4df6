"""Whether a node's task (and condition, and fallback) can be called with its parents' results.

Many nodes share one task, so the common case (a task taking the agent and every parent's result,
no condition, no fallback) is decided in a few set operations, and a condition's signature is
inspected once per function, not once per node; messages are only formatted for real problems.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cleo_dask.core.task import Signature

if TYPE_CHECKING:
    from cleo_dask.core.node import Node


class NodeChecker:
    """Checks many nodes (:meth:`problems`), remembering the conditions' signatures it inspected."""

    def __init__(self) -> None:
        self._when: dict[int, tuple[Any, Signature]] = {}   # id -> (the function, kept alive; its signature)

    def problems(self, node: Node, known: Mapping[str, Any] | None = None) -> list[str]:
        """Why ``node`` cannot run as given (empty if fine); ``known``: the nodes before it, to
        catch a forgotten ``after`` (a required argument named like a node that is not a parent)."""
        task = node.task
        sig = task.signature
        if (node.when is None and task.fallback is None and sig.takes_agent
                and (sig.var_keyword or sig.names.issuperset(node.parents))
                and not (known and sig.required and _forgotten(sig, node.parents, known))):
            return []
        what = f"node {node.name!r} (task {task.name!r})"
        problems = sig.problems(node.parents, what, complete=False)
        if node.when is not None:
            problems.extend(self._signature(node.when).problems(node.parents, f"condition 'when' of {what}"))
        if task.fallback is not None:
            problems.extend(task.fallback.signature.problems(node.parents, f"fallback of {what}", complete=False))
        for name in sorted(sig.required):
            if known and name in known and name not in node.parents:
                problems.append(f"{what} requires argument {name!r}, the name of node {name!r}, which is not "
                                f"among its parents: add after=[{name!r}] (or rename the argument)")
        return problems

    def _signature(self, when: Any) -> Signature:
        hit = self._when.get(id(when))
        if hit is None or hit[0] is not when:
            hit = self._when[id(when)] = (when, Signature.of(when, agent_first=False))
        return hit[1]


def _forgotten(sig: Signature, parents: tuple[str, ...], known: Mapping[str, Any]) -> bool:
    return any(name in known and name not in parents for name in sig.required)
