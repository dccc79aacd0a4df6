"""Benchmark DAG shapes, each as an ordered ``{node: (parents...)}`` dict (topological order),
and the ways to run them: a cleo_dask :class:`~cleo_dask.Workflow`, a raw Dask dict graph,
one ``dask.delayed`` per node."""
from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Any

Shape = dict[str, tuple[str, ...]]


def chain(n: int) -> Shape:
    """``t0 -> t1 -> ... -> t{n-1}``."""
    return {f"t{i}": ((f"t{i - 1}",) if i else ()) for i in range(n)}


def fan_out(n: int) -> Shape:
    """One root with ``n`` children (``n + 1`` nodes; the children are the sinks)."""
    shape: Shape = {"root": ()}
    shape.update({f"t{i}": ("root",) for i in range(n)})
    return shape


def layered(n: int, layers: int = 100, seed: int = 0, min_parents: int = 1, max_parents: int = 3) -> Shape:
    """``n`` nodes in ``layers`` equal layers; each node after the first layer has 1-3 parents
    drawn (seeded) from the previous layer."""
    rng = random.Random(seed)
    width = max(1, n // layers)
    shape: Shape = {}
    prev: list[str] = []
    for layer in range(layers):
        count = width if layer < layers - 1 else n - width * (layers - 1)
        cur = [f"l{layer}-{i}" for i in range(count)]
        for name in cur:
            k = min(len(prev), rng.randint(min_parents, max_parents))
            shape[name] = tuple(rng.sample(prev, k)) if k else ()
        prev = cur
    return shape


def sinks(shape: Shape) -> list[str]:
    """The nodes no other node depends on."""
    has_child = {p for ps in shape.values() for p in ps}
    return [n for n in shape if n not in has_child]


# -- task bodies (module-level so worker processes import them by reference) -------------------
def noop(*args: Any) -> None:
    """A raw-Dask no-op task."""
    return None


def agent_noop(agent: Any, **inputs: Any) -> None:
    """A cleo_dask no-op task (takes the agent and every parent's result)."""
    return None


# -- building ------------------------------------------------------------------------------------
def workflow(shape: Shape, fn: Any = agent_noop, name: str = "bench", **options: Any) -> Any:
    """A cleo_dask Workflow of ``shape`` whose every node runs ``fn`` (``options`` per node)."""
    import cleo_dask as cd

    spec = cd.task(fn, name="noop", **options) if options else cd.task(fn, name="noop")
    wf = cd.Workflow(name)
    for node, parents in shape.items():
        wf.add(spec, name=node, after=parents)
    return wf


def raw_graph(shape: Shape, fn: Any = noop, suffix: str = "") -> dict[str, Any]:
    """A raw Dask dict graph of ``shape`` (``(fn, *parents)`` tuples; keys get ``suffix``)."""
    return {n + suffix: (fn, *(p + suffix for p in ps)) for n, ps in shape.items()}


def delayed_sinks(shape: Shape, fn: Any = noop, suffix: str = "") -> list[Any]:
    """One ``dask.delayed`` per node (the way the issue warns against); returns the sinks."""
    from dask import delayed

    made: dict[str, Any] = {}
    for n, ps in shape.items():
        made[n] = delayed(fn, pure=False)(*(made[p] for p in ps), dask_key_name=n + suffix)
    return [made[s] for s in sinks(shape)]


# -- the contenders every overhead-style benchmark compares ---------------------------------------
_runs = itertools.count()


def raw_contender(shape: Shape, client: Any, before: Callable[[], Any] | None = None) -> Any:
    """The baseline of every ratio: ``shape`` as a raw Dask dict graph, ``client.get(dsk, sinks)``
    (fresh keys each run; ``before()`` runs untimed first)."""
    from . import _harness as h

    out_sinks = sinks(shape)

    def setup() -> tuple[dict, list[str]]:
        if before is not None:
            before()
        sfx = f"-raw{next(_runs)}"
        return raw_graph(shape, suffix=sfx), [k + sfx for k in out_sinks]

    def run(prepared: tuple[dict, list[str]]) -> None:
        dsk, keys = prepared
        assert len(client.get(dsk, keys)) == len(keys)

    return h.Contender(run, setup=setup)


def run_cleo(engine: Any, wf: Any, agent: Any, out_sinks: list[str]) -> Any:
    """One cleo_dask run of ``wf`` with the sinks' values fetched (as the raw baseline does)."""
    run = engine.submit(wf, agent)
    assert len(run.result().values_by_node(out_sinks)) == len(out_sinks)
    run.release()
    return run
