"""Batching, decided before the cluster: which nodes may share one Dask task, and how they group.

A *batch unit* is a set of nodes none of which depends on another, run in one Dask task whose
output is the tuple of their :class:`~cleo_dask.core.nodeoutput.NodeOutput` (indexed like a
fused chain's).  Pure functions over plain data:

* :func:`eligible`: a node is batched only if its task is known to be short (a declared
  ``duration``, or a measured one, at most ``cleo_dask.batch.max-duration``; ``force`` skips that
  test), it keeps no admission guarantee (``rate_limit``, ``io_bound``, the agent's
  ``max_concurrency``: not batched), and its task did not opt out (``@cd.task(batch=False)``).
  Retries that wait (a backoff) do not stop it: the batch waits for them outside the worker's
  thread pool (:mod:`cleo_dask.core.batch`).  Unknown durations start unbatched, so long tasks
  never lose parallelism.
* :func:`group_batches`: the eligible nodes of a topologically ordered set, grouped by
  generation (the longest path from the set's roots: nodes of one generation never depend on
  each other), each generation split into at least ``slots`` batches (every worker thread gets
  one) of at most ``max_nodes`` nodes.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cleo_dask import config as _config
from cleo_dask.errors import WorkflowError
from cleo_dask.failures.retry import RetryPolicy
from cleo_dask.util.options import Field, OptionPolicy


class TaskLike(Protocol):
    """What :func:`eligible` reads of a task spec."""

    name: str
    duration: float | None
    rate_limit: str | None
    io_bound: bool
    batch: bool


@dataclass(frozen=True)
class BatchSettings:
    """The ``cleo_dask.batch`` settings: ``force`` (batch every eligible node whatever its
    duration), ``max_duration`` (seconds: a task known to take at most this long is short),
    ``max_nodes`` (per batch) and ``min_batches`` (per generation when the cluster's thread count is
    unknown)."""

    force: bool = False
    max_duration: float = 0.01
    max_nodes: int = 1000
    min_batches: int = 2

    @classmethod
    def from_config(cls) -> BatchSettings:
        """The settings in Dask's config (``cleo_dask.batch.*``)."""
        return cls(bool(_config.get("batch.force", False)), float(_config.get("batch.max-duration", 0.01)),
                   max(1, int(_config.get("batch.max-nodes", 1000))), max(1, int(_config.get("batch.min-batches", 2))))


def known_duration(task: TaskLike, durations: Mapping[str, float] | None) -> float | None:
    """The task's duration in seconds as far as known: measured (``durations``: task name ->
    seconds), else declared (``duration=``), else ``None``."""
    if durations:
        measured = durations.get(task.name)
        if measured is not None:
            return measured
    return task.duration


def eligible(task: TaskLike, policy: RetryPolicy, settings: BatchSettings,
             durations: Mapping[str, float] | None = None, *, limited: bool = False,
             seconds: float | None = None) -> bool:
    """Whether a node running ``task`` under retry ``policy`` may be batched (module docstring).
    ``limited``: the agent has a ``max_concurrency``; ``seconds``: what this very node took in
    earlier runs (learned: it wins over its task's measured mean, a declared ``duration`` over it)."""
    if limited or not getattr(task, "batch", True) or task.rate_limit is not None or task.io_bound:
        return False
    if settings.force:
        return True
    if seconds is None or task.duration is not None:
        seconds = known_duration(task, durations)
    return seconds is not None and seconds <= settings.max_duration


def generations(order: Sequence[str], parents: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each node's generation within ``order`` (topologically ordered): 0 for a node without a
    parent in ``order``, else one more than its highest parent's.  Nodes of one generation never
    depend on each other, as long as every path between two nodes of ``order`` stays in ``order``
    (true of a whole workflow, and of any contiguous range of a topological order)."""
    gen: dict[str, int] = {}
    for n in order:
        g = 0
        for p in parents[n]:
            pg = gen.get(p)
            if pg is not None and pg >= g:
                g = pg + 1
        gen[n] = g
    return gen


def split(names: list[str], parts: int) -> list[list[str]]:
    """``names`` cut into ``parts`` contiguous pieces of sizes differing by at most one."""
    parts = max(1, min(parts, len(names)))
    size, extra = divmod(len(names), parts)
    out, i = [], 0
    for k in range(parts):
        j = i + size + (1 if k < extra else 0)
        out.append(names[i:j])
        i = j
    return out


def group_batches(order: Sequence[str], parents: Mapping[str, Sequence[str]], batchable: Iterable[str], *,
                  max_nodes: int, slots: int, gen: Mapping[str, int] | None = None,
                  sink: Callable[[str], bool] | None = None) -> list[list[str]]:
    """The batches of the ``batchable`` nodes of ``order``: per generation, at least ``slots``
    batches (fewer only if there are fewer nodes), each of at most ``max_nodes`` nodes, nodes in
    the order of ``order``.  A batch of one node is returned too (the caller may run it alone).
    ``gen``: the nodes' :func:`generations`, if already known.  ``sink(name)``: whether a node
    has no child; sinks are batched apart from the other nodes of their generation (a unit
    holding a sink is kept to the run's end: its other nodes' values, and their memory, need not be)."""
    wanted = set(batchable)
    gen = generations(order, parents) if gen is None else gen
    by_gen: dict[tuple[int, bool], list[str]] = {}
    for n in order:
        if n in wanted:
            by_gen.setdefault((gen[n], sink is not None and sink(n)), []).append(n)
    out: list[list[str]] = []
    for g in sorted(by_gen):
        names = by_gen[g]
        parts = max(slots, -(-len(names) // max(1, max_nodes)))
        out.extend(split(names, parts))
    return out


def batch_units(units: list[list[str]], order: Sequence[str], parents: Mapping[str, Sequence[str]],
                is_eligible: Any, *, max_nodes: int, slots: int,
                sink: Callable[[str], bool] | None = None) -> tuple[list[list[str]], set[int]]:
    """Replace the units of nodes that ``is_eligible(name)`` by batches.  A fused chain holding
    such a node is cut into single nodes first: a batch never errs, so a failure in it costs no
    resubmission of what is below (a chain is one Dask task per run of nodes; batches are one per
    generation, no more tasks for a linear run; sinks apart: see :func:`group_batches`).  Returns the new units, each after every unit it
    depends on, and the indexes of the batch units among them."""
    cut: list[list[str]] = []
    for u in units:
        if len(u) > 1 and any(is_eligible(n) for n in u):
            cut.extend([n] for n in u)
        else:
            cut.append(u)
    units = cut
    singles = [u[0] for u in units if len(u) == 1 and is_eligible(u[0])]
    if len(singles) < 2:
        return units, set()
    gen = generations(order, parents)
    batches = [b for b in group_batches(order, parents, singles, max_nodes=max_nodes, slots=slots, gen=gen,
                                        sink=sink) if len(b) > 1]
    if not batches:
        return units, set()
    batched = {n for b in batches for n in b}
    # a unit depending on another starts a later generation than every node of that one (a
    # chain's inner nodes have no other child): ordered by their first generation, each unit
    # comes after those it depends on (sorted() is stable: the rest keep their order)
    tagged = [(gen[u[0]], u, False) for u in units if not (len(u) == 1 and u[0] in batched)]
    tagged += [(gen[b[0]], b, True) for b in batches]
    tagged.sort(key=lambda t: t[0])
    return [u for _, u, _ in tagged], {i for i, (_, _, is_batch) in enumerate(tagged) if is_batch}


class BatchOptions(OptionPolicy):
    """The option ``batch`` of a task: ``False`` keeps its nodes out of batches (each runs as a
    Dask task of its own, however short)."""

    names = ("batch",)

    def check(self, options: Any, what: str) -> None:
        """``batch``: True or False."""
        if not isinstance(getattr(options, "batch", True), bool):
            raise WorkflowError(f"{what}: batch must be True or False, got {options.batch!r}")

    def read(self, data: Mapping[str, Any], field: Field, out: dict[str, Any]) -> None:
        """``batch: false``."""
        if "batch" in data:
            if isinstance(data["batch"], bool):
                out["batch"] = data["batch"]
            else:
                field.at("batch", data).problem(f"must be true or false, got {data['batch']!r}")


#: The batching policy's option.
BATCH_OPTIONS = BatchOptions()
