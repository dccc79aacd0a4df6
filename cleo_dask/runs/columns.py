"""A run's outcome in columns: one row per node number, a :class:`TaskResult` made when asked for.

A million-node run cannot afford a ``TaskResult`` (and a tuple of ``Attempt``) per node held for
as long as its outcome lives.  :class:`OutcomeColumns` keeps what every node has in ``array``
columns indexed by node number: the status (a small code), start and end (``nan`` when
unknown), the attempt count, and the worker and reason as indexes into tables of distinct
strings.  A node whose result says more than those columns can (failed attempts, a fallback,
upstream fallbacks, worker losses, a value known on the client) keeps its whole result in a
sparse map: only nodes that had failures pay for their details.

Rows the columns say everything about are *plain*:

* ``succeeded``: one attempt (number 1) from ``start`` to ``end`` on ``worker``, its value fetched
  when read (``fetch`` given by the caller);
* ``skipped`` / ``upstream_failed`` / ``cancelled``: no attempt, a ``reason``.

:class:`MetaBatch` is the same idea for what workers send back (:func:`compact_metas`): the
records of many keys in a few flat arrays instead of one tuple per node.
"""
from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from cleo_dask.core.nodeoutput import NodeOutput
from cleo_dask.core.outcome import Attempt, Status, TaskResult
from cleo_dask.util.gcpause import gc_paused

#: Status codes: a status is stored as its position here.
STATUSES: tuple[Status, ...] = tuple(Status)
CODE: dict[str, int] = {s.value: i for i, s in enumerate(STATUSES)}
SUCCEEDED, SKIPPED, UPSTREAM_FAILED, CANCELLED = (CODE[s] for s in ("succeeded", "skipped", "upstream_failed",
                                                                    "cancelled"))
FAILED, FELL_BACK, PENDING = CODE["failed"], CODE["fell_back"], CODE["pending"]
_NAN = float("nan")


class Strings:
    """A table of distinct strings, each stored once; ``None`` is index ``-1``."""

    __slots__ = ("items", "_index")

    def __init__(self) -> None:
        self.items: list[str] = []
        self._index: dict[str, int] = {}

    def code(self, text: str | None) -> int:
        """The index of ``text`` (added if new)."""
        if text is None:
            return -1
        i = self._index.get(text)
        if i is None:
            i = self._index[text] = len(self.items)
            self.items.append(text)
        return i

    def text(self, code: int) -> str | None:
        """The string of index ``code`` (``None`` for ``-1``)."""
        return None if code < 0 else self.items[code]


def _time(x: float) -> float | None:
    return None if math.isnan(x) else x


class OutcomeColumns:
    """Statuses, times, attempt counts, workers and reasons of ``names`` (in that order), by node number.

    Every row starts ``pending``; :meth:`set_plain` and :meth:`set_result` fill it.
    """

    __slots__ = ("names", "index", "status", "start", "end", "attempts", "worker", "reason", "workers", "reasons",
                 "extra")

    def __init__(self, names: Sequence[str], index: dict[str, int] | None = None, workers: Strings | None = None):
        n = len(names)
        self.names = names
        self.index = index if index is not None else {name: i for i, name in enumerate(names)}
        self.status = array("b", [PENDING]) * n
        self.start = array("d", [_NAN]) * n
        self.end = array("d", [_NAN]) * n
        self.attempts = array("I", [0]) * n
        self.worker = array("i", [-1]) * n
        self.reason = array("i", [-1]) * n
        self.workers = workers if workers is not None else Strings()
        self.reasons = Strings()
        self.extra: dict[int, TaskResult] = {}   # rows the columns cannot say everything about

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_metas(cls, metas: NodeMetas) -> OutcomeColumns:
        """Every row plain, as the workers' records in ``metas`` say (copied whole, not row by row)."""
        cols = cls(metas.names, metas.index, metas.workers)
        cols.status = array("b", metas.status)
        cols.start = array("d", metas.start)
        cols.end = array("d", metas.end)
        cols.attempts = array("I", map(SUCCEEDED.__eq__, metas.status))
        cols.worker = array("i", metas.worker)
        for i, (reason, _) in metas.rare.items():
            cols.reason[i] = cols.reasons.code(reason)
        return cols

    # -- filling --------------------------------------------------------------------------------
    def set_plain(self, i: int, status: int, start: float | None, end: float | None, worker: str | None,
                  reason: str | None) -> None:
        """Row ``i`` is plain (see the module docstring): ``status`` is a code of :data:`CODE`."""
        self.status[i] = status
        self.start[i] = _NAN if start is None else start
        self.end[i] = _NAN if end is None else end
        self.attempts[i] = 1 if status == SUCCEEDED else 0
        self.worker[i] = self.workers.code(worker)
        self.reason[i] = self.reasons.code(reason)
        self.extra.pop(i, None)

    def set_result(self, i: int, result: TaskResult) -> None:
        """Row ``i`` is ``result``: plain if the columns can rebuild it, otherwise kept whole."""
        if is_plain(result):
            self.set_plain(i, CODE[result.status.value], result.start, result.end, result.worker, result.reason)
            return
        self.status[i] = CODE[result.status.value]
        self.start[i] = _NAN if result.start is None else result.start
        self.end[i] = _NAN if result.end is None else result.end
        self.attempts[i] = len(result.attempts)
        self.worker[i] = self.workers.code(result.worker)
        self.reason[i] = self.reasons.code(result.reason)
        self.extra[i] = result

    # -- reading --------------------------------------------------------------------------------
    def result(self, i: int, run_id: str | None, fetch: Callable[[], Any] | None = None) -> TaskResult:
        """The :class:`TaskResult` of row ``i`` (``fetch`` reads a plain succeeded row's value)."""
        kept = self.extra.get(i)
        if kept is not None:
            return kept
        status = STATUSES[self.status[i]]
        start, end = _time(self.start[i]), _time(self.end[i])
        worker, reason = self.workers.text(self.worker[i]), self.reasons.text(self.reason[i])
        if status == Status.SUCCEEDED:
            return TaskResult(self.names[i], status, fetch=fetch, attempts=(Attempt(1, start, end, worker),),
                              start=start, end=end, worker=worker, reason=reason, run_id=run_id)
        return TaskResult(self.names[i], status, attempts=(), start=start, end=end, worker=worker, reason=reason,
                          run_id=run_id)

    def code_of(self, i: int) -> int:
        """The status code of row ``i``."""
        return self.status[i]

    def counts(self) -> dict[str, int]:
        """Number of nodes by status, in the order each status first appears."""
        found = [(self.status.index(c), STATUSES[c].value, n)
                 for c in range(len(STATUSES)) if (n := self.status.count(c))]
        return {value: n for _, value, n in sorted(found)}

    def rows_with(self, codes: Iterable[int]) -> list[int]:
        """Row numbers whose status is one of ``codes``, in order."""
        wanted = set(codes)
        if len(wanted) == 1:
            (code,) = wanted
            out, i = [], -1
            status = self.status
            while True:
                try:
                    i = status.index(code, i + 1)
                except ValueError:
                    return out
                out.append(i)
        return [i for i, c in enumerate(self.status) if c in wanted]

    def all_in(self, codes: Iterable[int]) -> bool:
        """True if every row's status is one of ``codes``."""
        wanted = set(codes)
        return all(self.status.count(c) == 0 for c in range(len(STATUSES)) if c not in wanted)

    def nbytes(self) -> int:
        """Bytes the columns take (the sparse rows and string tables not counted)."""
        return sum(a.itemsize * len(a) for a in (self.status, self.start, self.end, self.attempts, self.worker,
                                                 self.reason))


def is_plain(r: TaskResult) -> bool:
    """True if ``r`` is what :meth:`OutcomeColumns.result` rebuilds from its row alone."""
    if (r.error is not None or r.traceback is not None or r.fallback_used or r.upstream_fallbacks
            or r.worker_losses or r._value is not None):
        return False
    if r.status == Status.SUCCEEDED:
        if len(r.attempts) != 1:
            return False
        a = r.attempts[0]
        return (a == Attempt(1, r.start, r.end, r.worker) and r.start == a.start)
    if r.status in (Status.SKIPPED, Status.UPSTREAM_FAILED, Status.CANCELLED):
        return not r.attempts and r._fetch is None
    return False


# -- what workers send back -----------------------------------------------------------------------
class MetaBatch:
    """The records (``NodeOutput.meta()``) of many keys, flat: one entry per node of each key found.

    ``found[j]`` is the position of a found key in the list asked for, ``sizes[j]`` its number of
    nodes (``-1``: a single :class:`NodeOutput`); the node entries follow in order.  Reasons and
    upstream fallbacks, rare, are kept by entry number in ``rare``.
    """

    __slots__ = ("found", "sizes", "status", "start", "end", "attempt", "worker", "workers", "rare")

    def __init__(self) -> None:
        self.found = array("i")
        self.sizes = array("i")
        self.status = array("b")
        self.start = array("d")
        self.end = array("d")
        self.attempt = array("i")
        self.worker = array("i")
        self.workers = Strings()
        self.rare: dict[int, tuple[str | None, tuple[str, ...]]] = {}

    def __reduce__(self):
        return (_rebuild, (self.found, self.sizes, self.status, self.start, self.end, self.attempt, self.worker,
                           self.workers.items, self.rare))

    def add(self, position: int, output: Any) -> None:
        """Add the key asked for at ``position``, whose output is ``output`` (one or a tuple)."""
        self.found.append(position)
        if isinstance(output, NodeOutput):
            self.sizes.append(-1)
            self._add_meta(output.meta())
        else:
            self.sizes.append(len(output))
            for o in output:
                self._add_meta(o.meta())

    def _add_meta(self, meta: tuple) -> None:
        status, start, end, worker, attempt, reason, upstream = meta
        if reason is not None or upstream:
            self.rare[len(self.status)] = (reason, tuple(upstream))
        self.status.append(CODE[status])
        self.start.append(_NAN if start is None else start)
        self.end.append(_NAN if end is None else end)
        self.attempt.append(attempt or 0)
        self.worker.append(self.workers.code(worker))

    def metas(self, keys: Sequence[str]) -> Iterator[tuple[str, Any]]:
        """``(key, meta)`` for each key found (``keys``: the list asked for); ``meta`` as
        :func:`cleo_dask.core.worker.collect_meta` gives it (a tuple of them for several nodes)."""
        e = 0
        for position, size in zip(self.found, self.sizes):
            if size < 0:
                yield keys[position], self.meta(e)
                e += 1
            else:
                yield keys[position], tuple(self.meta(e + k) for k in range(size))
                e += size

    def meta(self, e: int) -> tuple:
        """Entry ``e`` as a ``NodeOutput.meta()`` tuple."""
        reason, upstream = self.rare.get(e, (None, ()))
        return (STATUSES[self.status[e]].value, _time(self.start[e]), _time(self.end[e]),
                self.workers.text(self.worker[e]), self.attempt[e], reason, upstream)


def _rebuild(found, sizes, status, start, end, attempt, worker, workers, rare) -> MetaBatch:
    out = MetaBatch()
    out.found, out.sizes, out.status, out.start, out.end, out.attempt, out.worker = (
        found, sizes, status, start, end, attempt, worker)
    for w in workers:
        out.workers.code(w)
    out.rare = rare
    return out


def compact_metas(keys: list[str], dask_worker: Any = None) -> MetaBatch:
    """On a worker (``Client.run``): the records of those of ``keys`` it holds, without the values."""
    data = dask_worker.data
    out = MetaBatch()
    for position, k in enumerate(keys):
        if k in data:
            out.add(position, data[k])
    return out


class NodeMetas:
    """The workers' records of a run's finished units, by node number (what ``collect_meta`` gives,
    without a tuple per node): ``key in metas`` once a unit's records are here."""

    __slots__ = ("names", "index", "keys", "status", "start", "end", "attempt", "worker", "workers", "rare")

    def __init__(self, names: Sequence[str]):
        n = len(names)
        self.names = names
        self.index = {name: i for i, name in enumerate(names)}
        self.keys: set[str] = set()
        self.status = array("b", [PENDING]) * n
        self.start = array("d", [_NAN]) * n
        self.end = array("d", [_NAN]) * n
        self.attempt = array("i", [0]) * n
        self.worker = array("i", [-1]) * n
        self.workers = Strings()
        self.rare: dict[int, tuple[str | None, tuple[str, ...]]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self.keys

    def grow(self, names: Sequence[str]) -> None:
        """Make rows for ``names``, nodes added to the run while it runs (mapped items)."""
        if not names:
            return
        n = len(names)
        self.names = list(self.names) + list(names)
        self.index.update((name, i) for i, name in enumerate(names, len(self.index)))
        self.status.extend(array("b", [PENDING]) * n)
        self.start.extend(array("d", [_NAN]) * n)
        self.end.extend(array("d", [_NAN]) * n)
        self.attempt.extend(array("i", [0]) * n)
        self.worker.extend(array("i", [-1]) * n)

    def with_upstream(self) -> list[int]:
        """Node numbers whose record names upstream fallbacks."""
        return [i for i, (_, upstream) in self.rare.items() if upstream]

    def has_upstream(self, i: int) -> bool:
        """True if node ``i``'s record names upstream fallbacks."""
        rare = self.rare.get(i)
        return rare is not None and bool(rare[1])

    def put(self, key: str, nodes: Sequence[str], meta: Any, location: dict[str, tuple[str, int]]) -> None:
        """Keep the record(s) of unit ``key`` (its ``nodes``): a meta tuple, or a tuple of them.
        A node whose output now lives under another key (``location``) keeps its record."""
        metas = [meta] if meta and isinstance(meta[0], str) else meta
        for node, m in zip(nodes, metas):
            if location.get(node, (None,))[0] == key:
                self._put_node(self.index[node], m)
        self.keys.add(key)

    @gc_paused()   # a tuple per node made and dropped: no full collection for them
    def put_batch(self, keys: Sequence[str], batch: MetaBatch, units: dict[str, tuple[str, ...]],
                  location: dict[str, tuple[str, int]] | None) -> None:
        """Keep the records in ``batch``, an answer to ``compact_metas(keys)`` (see :meth:`put`;
        ``location=None``: no node ever moved to another key, none is checked)."""
        index, no_loc = self.index, (None,)
        get_loc = location.get if location is not None else None
        wmap = [self.workers.code(w) for w in batch.workers.items]
        status, start, end, attempt, worker = self.status, self.start, self.end, self.attempt, self.worker
        b_status, b_start, b_end, b_attempt, b_worker = batch.status, batch.start, batch.end, batch.attempt, batch.worker
        rare, b_rare = self.rare, batch.rare
        targets: list[tuple[int, int]] = []   # (node number, entry)
        e = 0
        for position, size in zip(batch.found, batch.sizes):
            key = keys[position]
            self.keys.add(key)
            nodes = units.get(key, ())
            if get_loc is None and size < 0 and nodes:
                targets.append((index[nodes[0]], e))
                e += 1
                continue
            for k in range(size if size > 0 else 1):
                if k < len(nodes) and (get_loc is None or get_loc(nodes[k], no_loc)[0] == key):
                    targets.append((index[nodes[k]], e))
                e += 1
        for i, e in targets:
            status[i] = b_status[e]
            start[i] = b_start[e]
            end[i] = b_end[e]
            attempt[i] = b_attempt[e]
            worker[i] = wmap[b_worker[e]] if b_worker[e] >= 0 else -1
        if rare or b_rare:
            for i, e in targets:
                r = b_rare.get(e)
                if r is not None:
                    rare[i] = r
                elif rare:
                    rare.pop(i, None)

    def _put_node(self, i: int, meta: tuple) -> None:
        status, start, end, worker, attempt, reason, upstream = meta
        self.status[i] = CODE[status]
        self.start[i] = _NAN if start is None else start
        self.end[i] = _NAN if end is None else end
        self.attempt[i] = attempt or 0
        self.worker[i] = self.workers.code(worker)
        if reason is not None or upstream:
            self.rare[i] = (reason, tuple(upstream))
        else:
            self.rare.pop(i, None)

    def meta(self, node: str) -> tuple:
        """The record of ``node`` as a ``NodeOutput.meta()`` tuple."""
        i = self.index[node]
        reason, upstream = self.rare.get(i, (None, ()))
        return (STATUSES[self.status[i]].value, _time(self.start[i]), _time(self.end[i]),
                self.workers.text(self.worker[i]), self.attempt[i], reason, upstream)


def journal_rows(cols: OutcomeColumns) -> Iterator[tuple[str, str, int, float | None, float | None, str | None,
                                                          str | None, tuple[Attempt, ...]]]:
    """Each row as ``(node, status, attempt count, start, end, worker, reason, attempts)``, no
    :class:`TaskResult` made but for the rows kept whole."""
    names, extra, workers, reasons = cols.names, cols.extra, cols.workers, cols.reasons
    for i, code in enumerate(cols.status):
        kept = extra.get(i)
        if kept is not None:
            yield (names[i], kept.status.value, len(kept.attempts), kept.start, kept.end, kept.worker, kept.reason,
                   kept.attempts)
            continue
        start, end, worker = _time(cols.start[i]), _time(cols.end[i]), workers.text(cols.worker[i])
        attempts = (Attempt(1, start, end, worker),) if code == SUCCEEDED else ()
        yield (names[i], STATUSES[code].value, len(attempts), start, end, worker, reasons.text(cols.reason[i]),
               attempts)
