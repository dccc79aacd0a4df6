"""Which nodes of a big run go to the cluster in which window, and what may be released: pure.

A workflow bigger than ``cleo_dask.window.nodes`` is sent in *windows*: consecutive slices of
its topological order, so a window's parents are all in it or in an earlier one.  The first
window is small (``window.first-nodes``) while the duration of some task is unknown: it is
measured there, and the next windows are compiled knowing it.  A workflow smaller than a window
but of at least ``window.measure-from`` nodes is sent the same way while some task's duration is
unknown (its first ``first-nodes`` measured, then the rest batched), unless ``batch.force``.  A unit (one Dask task) is
released once it holds no sink and every child of its nodes has finished: no window still to
come, nor any retry of a child, reads it again.  :mod:`cleo_dask.runs.windows` carries this out.
"""
from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field

from cleo_dask import config as _config
from cleo_dask.errors import CleoError


#: finished attempts measured per task, at most (see :meth:`WindowPlan.enough`)
ENOUGH = 2_000


@dataclass(frozen=True)
class WindowSettings:
    """``cleo_dask.window.*``: nodes per window, the first window's size when durations are
    unknown, the fraction of a window done before the next is sent, whether values are kept,
    the size from which a workflow is measured first (its durations unknown) even if it fits."""

    nodes: int = 20_000
    first_nodes: int = 1_000
    send_at: float = 0.5
    keep_values: bool = False
    measure_from: int = 5_000

    @classmethod
    def from_config(cls) -> WindowSettings:
        """The settings from Dask's config; a bad one is a :class:`CleoError` naming it."""
        got = _config.get("window", {}) or {}
        nodes, first = got.get("nodes", cls.nodes), got.get("first-nodes", cls.first_nodes)
        send_at, keep = got.get("send-at", cls.send_at), got.get("keep-values", cls.keep_values)
        measure = got.get("measure-from", cls.measure_from)
        for name, v in (("nodes", nodes), ("first-nodes", first), ("measure-from", measure)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise CleoError(f"cleo_dask.window.{name} must be a whole number >= 1, got {v!r}")
        if isinstance(send_at, bool) or not isinstance(send_at, (int, float)) or not 0 < send_at <= 1:
            raise CleoError(f"cleo_dask.window.send-at must be a fraction in (0, 1], got {send_at!r}")
        return cls(nodes, min(first, nodes), float(send_at), bool(keep), measure)

    def windowed(self, size: int, known: bool) -> bool:
        """Whether a workflow of ``size`` nodes goes window by window (``known``: every task's
        duration is known already, or batching is forced, so nothing is left to measure first)."""
        if size > self.nodes:
            return True
        return not known and size >= self.measure_from and size > self.first_nodes


def window_of(order: list[str], start: int, size: int, skip: Container[str]) -> tuple[list[str], int]:
    """The next window: up to ``size`` nodes of ``order`` from ``start`` that are not in ``skip``
    (their outcome is known already); and where the one after starts."""
    names: list[str] = []
    i = start
    while i < len(order) and len(names) < size:
        if order[i] not in skip:
            names.append(order[i])
        i += 1
    return names, i


def releasable(names: Iterable[str], children: Mapping[str, list[str]], done: Callable[[str], bool]) -> bool:
    """Whether a finished unit of ``names`` may be released: none is a sink (a sink's value is
    what the run is for) and every child outside the unit is ``done``."""
    inside = names if isinstance(names, (set, frozenset)) else set(names)
    for n in inside:
        kids = children[n]
        if not kids:
            return False
        for c in kids:
            if c not in inside and not done(c):
                return False
    return True


@dataclass
class WindowPlan:
    """A windowed run's progress: its topological ``order``, the next node to send
    (``cursor``), the durations measured per task, the keys released."""

    order: list[str]
    settings: WindowSettings
    tasks: frozenset[str] = frozenset()   # the workflow's task names
    options: dict = field(default_factory=dict)   # compile_workflow's keyword arguments for every window
    held: bool = True   # the run waits for windows still to send (see RunWindows)
    cursor: int = 0
    sent_windows: int = 0
    released: set[str] = field(default_factory=set)
    _seconds: dict[str, list[float]] = field(default_factory=dict)   # task -> [sum, count]

    @property
    def remaining(self) -> int:
        """How many nodes are not sent yet (some of them may end without being sent)."""
        return len(self.order) - self.cursor

    def learn(self, task: str, seconds: float) -> None:
        """One finished attempt of ``task`` took ``seconds``."""
        acc = self._seconds.setdefault(task, [0.0, 0])
        acc[0] += max(0.0, seconds)
        acc[1] += 1

    def enough(self, task: str) -> bool:
        """Whether ``task`` was measured :data:`ENOUGH` times already (more would not change its mean
        much, and reading each node's record costs a run of a million nodes seconds)."""
        acc = self._seconds.get(task)
        return acc is not None and acc[1] >= ENOUGH

    def learn_all(self, durations: Mapping[str, float]) -> None:
        """Durations known beforehand (task -> seconds; e.g. from earlier runs in the journal)."""
        for task, seconds in durations.items():
            self.learn(task, seconds)

    @property
    def durations(self) -> dict[str, float]:
        """Task name -> mean seconds measured so far."""
        return {t: s / n for t, (s, n) in self._seconds.items() if n}

    def all_known(self) -> bool:
        """Whether the duration of every task of the workflow is known (declared or measured)."""
        known = self._seconds
        return all(t in known for t in self.tasks)

    def next_size(self) -> int:
        """The next window's size: the first one small while the duration of some task is unknown."""
        if self.all_known():
            return self.settings.nodes
        return self.settings.first_nodes if self.sent_windows == 0 else self.settings.nodes

    @property
    def keeps_values(self) -> bool:
        """Whether finished units stay on the cluster: ``window.keep-values``, or a workflow that fits in
        one window (sent in two only to measure its durations first: its values are kept, as in a
        run sent in one graph)."""
        return self.settings.keep_values or len(self.order) <= self.settings.nodes

    def take(self, skip: Container[str], size: int) -> list[str]:
        """The next window's nodes (those in ``skip`` are passed over); moves the cursor."""
        names, self.cursor = window_of(self.order, self.cursor, size, skip)
        self.sent_windows += 1
        return names


def mean_by_task(node_seconds: Mapping[str, float], task_of: Callable[[str], str | None]) -> dict[str, float]:
    """Per-node seconds (e.g. the journal's, of earlier runs) as mean seconds per task name
    (``task_of(node)``: its task's name, ``None`` for a node no longer in the workflow)."""
    acc: dict[str, list[float]] = {}
    for node, s in node_seconds.items():
        task = task_of(node)
        if task is not None and s is not None:
            a = acc.setdefault(task, [0.0, 0])
            a[0] += s
            a[1] += 1
    return {t: s / n for t, (s, n) in acc.items()}
