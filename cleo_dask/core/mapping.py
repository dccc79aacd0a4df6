"""Mapped nodes (issue 19): one node per element of a parent's result, made at run time.

``wf.map(search, over="plan")`` adds a :class:`MapNode` named ``"search"``.  Nothing of it, nor
of what depends on it, is sent with the run's first graph.  Once ``plan`` has succeeded, a small
Dask task (:func:`map_length`, on the worker holding ``plan``'s output) measures its result; the
run then *expands* the map node (:func:`expansion`): one :class:`ItemNode` ``"search[i]"`` per
element (an ordinary node: the item task's retries, timeout, fallback, admission limits, outcome)
and, under the map node's own name, a *gather* node whose parents are the items and whose value
is the list of their results, in order.  The consumers of ``"search"`` are then sent as usual
and receive that list under the parameter ``search``.

A failed item appears as its :class:`Failure` in the list and makes the gather ``failed``, so each
consumer follows its own trigger rule (``all_success``: skipped; ``all_done``: runs with the list).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cleo_dask.config import get as config_get
from cleo_dask.core.node import Node
from cleo_dask.core.outcome import Failure
from cleo_dask.core.task import TaskSpec, as_spec, task
from cleo_dask.errors import WorkflowError
from cleo_dask.failures.rules import ALL_DONE

#: the setting that caps the length of a mapped result
MAX_LENGTH_SETTING = "dynamic.max-map-length"


class MapError(WorkflowError):
    """A mapped parent's result cannot be mapped over (not a sequence, or longer than the limit)."""


@dataclass(frozen=True, slots=True)
class MapNode(Node):
    """A mapped node before its expansion: ``over`` is the parent mapped over, ``item_task`` the
    task each element is given to (as its argument ``arg``).  Its ``task`` is the gather's."""

    over: str = ""
    item_task: TaskSpec | None = None
    arg: str = "item"


@dataclass(frozen=True, slots=True)
class ItemNode(Node):
    """Item ``index`` of a mapped node: its one parent is the node mapped over; it receives that
    parent's element ``index`` as its argument ``arg``."""

    index: int = 0
    arg: str = "item"

    def input(self, pos: int, idx: int) -> tuple[tuple[str, int], int, int]:
        """The ``NodeCall`` input triple of its parent's output (``pos``, ``idx``: where it lives):
        the element ``index`` of that output, handed over as ``arg``."""
        return ((self.arg, self.index), pos, idx)


class Gathered:
    """What the gather task returns: the items' results in order; ``failed`` if one failed (the
    worker then records the gather as ``failed``, its value still the list)."""

    __slots__ = ("items", "failed")

    def __init__(self, items: list[Any], failed: bool):
        self.items = items
        self.failed = failed


def _gather(agent: Any, **items: Any) -> Gathered:
    values = [v for k, v in items.items() if k.endswith("]")]   # item names, not workflow inputs
    return Gathered(values, any(isinstance(v, Failure) for v in values))


#: the task of every gather node
GATHER: TaskSpec = task(_gather, name="gather").spec


def item_name(name: str, index: int) -> str:
    """The name of item ``index`` of mapped node ``name``: ``"search[3]"``."""
    return f"{name}[{index}]"


def item_argument(spec: TaskSpec, over: str, arg: str | None, node: str) -> str:
    """The argument an item task receives its element as: ``arg`` if given, else ``item`` if it
    takes one, else the name of the node mapped over, else its one required argument."""
    sig = spec.signature
    if arg is not None:
        if arg not in sig.names and not sig.var_keyword:
            raise WorkflowError(f"map node {node!r}: task {spec.name!r} takes no argument {arg!r}")
        return arg
    for candidate in ("item", over):
        if candidate in sig.names:
            return candidate
    if len(sig.required) == 1:
        return next(iter(sig.required))
    raise WorkflowError(f"map node {node!r}: task {spec.name!r} must take the element as an argument "
                        f"named 'item' (or {over!r}, or pass arg=...); it takes {sorted(sig.names)}")


def map_node(name: str, task_: Any, over: str, arg: str | None = None, **options: Any) -> MapNode:
    """A :class:`MapNode` ``name`` giving each element of ``over``'s result to ``task_`` (its
    ``options`` override the task's); :class:`WorkflowError` on bad input."""
    spec = as_spec(task_)
    if options:
        spec = spec.with_options(**options)
    if not isinstance(over, str) or not over:
        raise WorkflowError(f"map node {name!r}: 'over' must be a node name, got {over!r}")
    argument = item_argument(spec, over, arg, name)
    others = sorted(spec.signature.required - {argument})
    if others:
        raise WorkflowError(f"map node {name!r}: task {spec.name!r} requires {others} besides the element "
                            f"{argument!r}; an item task receives only its element")
    return MapNode(name, GATHER, (over,), over=over, item_task=spec, arg=argument)


def expansion(node: MapNode, length: int) -> tuple[list[ItemNode], Node]:
    """The items of ``node`` over a result of ``length`` elements, and its gather node."""
    items = [ItemNode(item_name(node.name, i), node.item_task, (node.over,), index=i, arg=node.arg)
             for i in range(length)]
    return items, Node(node.name, GATHER, tuple(i.name for i in items), None, ALL_DONE)


def max_length() -> int:
    """``cleo_dask.dynamic.max-map-length`` (default 10,000)."""
    return int(config_get(MAX_LENGTH_SETTING, 10_000))


def check_mappable(node: str, over: str, value: Any, limit: int) -> int:
    """The length of ``value`` if a map node can map over it; else a :class:`MapError` naming why."""
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Sequence):
        if isinstance(value, (str, bytes, bytearray)) or not hasattr(value, "__len__") \
                or not hasattr(value, "__getitem__"):
            raise MapError(f"map node {node!r}: the result of {over!r} is not a sequence "
                           f"(got {type(value).__name__}); a mapped parent must return a list or tuple")
    n = len(value)
    if n > limit:
        raise MapError(f"map node {node!r}: the result of {over!r} has {n} elements, more than "
                       f"cleo_dask.dynamic.max-map-length ({limit})")
    return n


def map_length(output: Any, idx: int, node: str, over: str, limit: int) -> tuple[int, Any, str, str | None]:
    """On a worker: ``(length, None, status, reason)`` of the mapped parent's result in ``output``
    (its unit's Dask value; ``idx``: its index in a multi-node unit, or ``-1``), or ``(-1, MapError,
    ...)``; a parent that did not succeed (skipped on its worker, a failed gather) gives its status."""
    out = output if idx < 0 else output[idx]
    if out.status not in ("succeeded", "fell_back"):
        return -1, None, out.status, out.reason
    try:
        return check_mappable(node, over, out.value, limit), None, out.status, None
    except MapError as exc:
        return -1, exc, out.status, None


def element(out: Any, index: int) -> Any:
    """The output an item receives: element ``index`` of its parent's ``out``, same record."""
    return type(out)(out.value[index], out.status, out.start, out.end, out.worker, out.attempt, out.reason,
                     out.upstream_fallbacks)
