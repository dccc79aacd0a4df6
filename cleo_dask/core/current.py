"""Which run and node the code running now belongs to (set on the worker around each task body).

:func:`current_node` is read by what a task body may call that needs to know its run: a signal
node's body (which run's signal to read) and ``cd.spawn`` (whose child run it starts).
"""
from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CurrentNode:
    """The node whose body is running: its run, its name, the Dask key of its unit and the run's agent."""
    run_id: str
    node: str
    key: str
    agent: Any = None
    store: Any = None     # the run's result store on the workers (durable runs), else None


_current: contextvars.ContextVar[CurrentNode | None] = contextvars.ContextVar("cleo_current_node", default=None)


def enter_node(run_id: str, node: str, key: str, agent: Any = None, store: Any = None) -> contextvars.Token:
    """Mark ``node`` of ``run_id`` as running in this context; hand the token to :func:`leave_node`."""
    return _current.set(CurrentNode(run_id, node, key, agent, store))


def leave_node(token: contextvars.Token) -> None:
    """Undo :func:`enter_node`."""
    try:
        _current.reset(token)
    except ValueError:  # reset from another context (a body abandoned by its time limit): just clear
        _current.set(None)


def current_node() -> CurrentNode | None:
    """The node whose body runs in this context (``None`` outside a cleo task body)."""
    return _current.get()
