"""The compact form of the commonest unit: one node whose Dask dependency ``i`` is parent ``i``'s unit.

A compiled workflow holds one unit per Dask task until the run is submitted.  A
:class:`~cleo_dask.core.worker.UnitCall` with its tuple of one :class:`~cleo_dask.core.worker.NodeCall`
and that call's ``(parent, position, index)`` triples costs about 390 bytes a node; most nodes of a
big graph are single-node units whose parents are single-node units or end fused runs (dependency
``i`` of the Dask task is parent ``i``'s unit), so everything the call says is already in the workflow's
:class:`~cleo_dask.core.node.Node`.  :class:`PlainUnit` keeps that node (64 bytes) and makes the
``UnitCall`` when asked: pickled (what the workers receive) it *is* that ``UnitCall``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cleo_dask.core.worker import NodeCall, UnitCall

if TYPE_CHECKING:
    from cleo_dask.core.node import Node
    from cleo_dask.core.outputstore import OutputStore


class PlainUnit:
    """A single-node unit whose Dask dependencies are its node's parents' units, in order (each
    parent a single-node unit: its whole output); reads like a :class:`UnitCall` (``run_id``,
    ``key``, ``nodes``, ``store``)."""

    __slots__ = ("run_id", "key", "node", "store")

    def __init__(self, run_id: str, key: str, node: Node, store: OutputStore | None = None):
        self.run_id, self.key, self.node, self.store = run_id, key, node, store

    @property
    def nodes(self) -> tuple[NodeCall, ...]:
        """The unit's one :class:`NodeCall` (made anew on each access)."""
        node = self.node
        inputs = tuple([(p, i, -1) for i, p in enumerate(node.parents)])
        return (NodeCall(node.name, node.task, inputs, node.when, node.trigger),)

    def unit_call(self) -> UnitCall:
        """The same unit as a plain :class:`UnitCall`."""
        return UnitCall(self.run_id, self.key, self.nodes, self.store)

    def __reduce__(self) -> tuple[Any, ...]:
        return (UnitCall, (self.run_id, self.key, self.nodes, self.store))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key!r})"


class IndexedPlainUnit(PlainUnit):
    """A :class:`PlainUnit` some of whose parents end a fused run: dependency ``i`` is parent ``i``'s
    unit, whose output holds it at ``indexes[i]`` (``-1``: the unit's whole output)."""

    __slots__ = ("indexes",)

    def __init__(self, run_id: str, key: str, node: Node, store: OutputStore | None, indexes: tuple[int, ...]):
        self.run_id, self.key, self.node, self.store, self.indexes = run_id, key, node, store, indexes

    @property
    def nodes(self) -> tuple[NodeCall, ...]:
        """The unit's one :class:`NodeCall` (made anew on each access)."""
        node = self.node
        inputs = tuple([(p, i, idx) for i, (p, idx) in enumerate(zip(node.parents, self.indexes))])
        return (NodeCall(node.name, node.task, inputs, node.when, node.trigger),)
