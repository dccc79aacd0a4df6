"""The output of a multi-node unit (a fused chain, a batch): its nodes' :class:`NodeOutput`\\ s, sent as one object.

A unit of several nodes outputs the tuple of their outputs, indexed like its nodes.  Dask sends a
value of the exact type ``tuple`` (or ``list``, ``dict``) to another worker *element by element*,
each with a header and frames of its own: for a batch of a thousand nodes that was most of a
worker's CPU time.  :class:`Outputs` is a ``tuple`` (children and the client read it as before)
whose type is not exactly ``tuple``, so it travels as one pickle, and that pickle is columnar:
one tuple of values, the times packed as doubles, the rare fields (reason, upstream fallbacks)
only where set.
"""
from __future__ import annotations

from array import array
from collections.abc import Iterable
from typing import Any

from cleo_dask.core.nodeoutput import NodeOutput

_NAN = float("nan")


class Outputs(tuple):
    """The outputs of a unit's nodes, by index; pickled as columns (see the module docstring)."""

    __slots__ = ()

    def __new__(cls, outputs: Iterable[NodeOutput] = ()) -> Outputs:
        return super().__new__(cls, outputs)

    def __reduce__(self) -> tuple[Any, ...]:
        if not all(type(o) is NodeOutput for o in self):   # anything else: as a plain tuple would
            return (Outputs, (tuple(self),))
        rare = {i: (o.reason, o.upstream_fallbacks) for i, o in enumerate(self) if o.reason is not None
                or o.upstream_fallbacks}
        return (_rebuild, (tuple([o.value for o in self]), tuple([o.status for o in self]),
                           array("d", [_NAN if o.start is None else o.start for o in self]).tobytes(),
                           array("d", [_NAN if o.end is None else o.end for o in self]).tobytes(),
                           tuple([o.worker for o in self]), tuple([o.attempt for o in self]), rare))


def _rebuild(values: tuple, statuses: tuple, starts: bytes, ends: bytes, workers: tuple, attempts: tuple,
             rare: dict[int, tuple]) -> Outputs:
    start, end = array("d"), array("d")
    start.frombytes(starts)
    end.frombytes(ends)
    outs = [NodeOutput(v, s, None if a != a else a, None if b != b else b, w, n)
            for v, s, a, b, w, n in zip(values, statuses, start, end, workers, attempts)]
    for i, (reason, upstream) in rare.items():
        outs[i].reason, outs[i].upstream_fallbacks = reason, upstream
    return Outputs(outs)
