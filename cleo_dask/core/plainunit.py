"""The compact form of the commonest unit: one node, each parent's whole output as an argument.

A compiled workflow holds one unit per Dask task until the run is submitted.  A
:class:`~cleo_dask.core.worker.UnitCall` with its tuple of one :class:`~cleo_dask.core.worker.NodeCall`
and that call's ``(parent, position, index)`` triples costs about 390 bytes a node; most nodes of a
big graph are single-node units whose parents are single-node units too (dependency ``i`` of the
Dask task is parent ``i``), so everything the call says is already in the workflow's
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
    """A single-node unit whose Dask dependencies are its node's parents, in order (each a
    single-node unit); reads like a :class:`UnitCall` (``run_id``, ``key``, ``nodes``, ``store``)."""

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
        return f"PlainUnit({self.key!r})"
