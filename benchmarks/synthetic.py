"""Synthetic workflows shaped like WfCommons recipes, in the trace format of ``../shared/bench/wfsim.py``.

Each recipe returns ``{"name", "tasks": [{"id", "runtime_s", "parents"}]}`` with tasks named
``t_<i>`` (in topological order), as a user's own workflow would be: nothing in a task's name
says which program it runs, so the engine has to learn durations rather than group by name.
Runtimes are drawn (seeded) per stage, as in WfCommons' recipes: a stage's tasks are alike, with
spread; stages differ a lot (a long ``map`` beside short filters, one long ``mAdd``...).

* ``montage``: project, diff-fit of neighbours, one concat/model, background, one long add, shrink.
* ``epigenomics``: lanes split into chunks, a 4-step pipeline per chunk (a long ``map``), merges.
* ``genome``: long ``individuals`` per chromosome, merges, many short frequency/overlap jobs.
* ``layered``: random layers, 1-3 parents each, heavy-tailed runtimes.
* ``forkjoin``: stages of a wide fork of mixed lengths, each closed by a join.
"""
from __future__ import annotations

import random
from collections.abc import Callable

Instance = dict


class _Builder:
    def __init__(self, name: str, seed: int):
        self.rng = random.Random(seed)
        self.tasks: list[dict] = []
        self.name = name

    def add(self, mean: float, parents: list[str] = (), spread: float = 0.3) -> str:
        tid = f"t_{len(self.tasks)}"
        runtime = max(0.01, self.rng.lognormvariate(0, spread) * mean)
        self.tasks.append({"id": tid, "runtime_s": round(runtime, 4), "parents": list(parents)})
        return tid

    def done(self) -> Instance:
        return {"name": self.name, "tasks": self.tasks}


def montage(n: int, seed: int = 0) -> Instance:
    """About ``n`` tasks: ``n/4`` projections, their neighbour diffs, one fit chain, backgrounds, one add."""
    b = _Builder(f"syn-montage-{n}", seed)
    k = max(2, n // 4)
    proj = [b.add(10.0) for _ in range(k)]
    diffs = [b.add(2.0, [proj[i], proj[j]]) for i in range(k) for j in (i + 1, i + 2) if j < k]
    concat = b.add(8.0, diffs)
    model = b.add(20.0, [concat])
    back = [b.add(3.0, [model, p]) for p in proj]
    tbl = b.add(5.0, back)
    add = b.add(60.0, [tbl], spread=0.1)
    shrink = [b.add(4.0, [add]) for _ in range(max(1, k // 8))]
    b.add(3.0, shrink)
    return b.done()


def epigenomics(n: int, seed: int = 0) -> Instance:
    """About ``n`` tasks: lanes, each split into chunks of filter -> sol2sanger -> fast2bfq -> map."""
    b = _Builder(f"syn-epigenomics-{n}", seed)
    lanes = max(1, n // 100)
    chunks = max(2, (n - 2 * lanes - 2) // (4 * lanes))
    merges = []
    for _ in range(lanes):
        split = b.add(5.0)
        maps = []
        for _ in range(chunks):
            t = b.add(1.5, [split])
            t = b.add(0.5, [t])
            t = b.add(1.0, [t])
            maps.append(b.add(30.0, [t], spread=0.5))
        merges.append(b.add(6.0, maps))
    index = b.add(10.0, merges)
    b.add(15.0, [index])
    return b.done()


def genome(n: int, seed: int = 0) -> Instance:
    """About ``n`` tasks: chromosomes of long ``individuals`` jobs and a merge, then sifting and
    many short frequency / overlap jobs reading a merge and a sifting."""
    b = _Builder(f"syn-genome-{n}", seed)
    chroms = max(1, n // 60)
    per = max(2, n // (chroms * 3))
    outs = []
    for _ in range(chroms):
        inds = [b.add(40.0, spread=0.4) for _ in range(per)]
        merge = b.add(8.0, inds)
        sift = b.add(3.0)
        outs += [b.add(5.0, [merge, sift], spread=0.6) for _ in range(max(1, (n // chroms) - per - 2))]
    return b.done()


def layered(n: int, seed: int = 0, layers: int = 12) -> Instance:
    """``n`` tasks in ``layers`` random layers, 1-3 parents from the layer above, heavy-tailed runtimes."""
    b = _Builder(f"syn-layered-{n}", seed)
    rng = b.rng
    prev: list[str] = []
    for layer in range(layers):
        width = max(1, n // layers) if layer < layers - 1 else n - len(b.tasks)
        cur = []
        for _ in range(width):
            parents = rng.sample(prev, min(len(prev), rng.randint(1, 3))) if prev else []
            cur.append(b.add(rng.paretovariate(1.5), parents, spread=0.2))
        prev = cur
    return b.done()


def forkjoin(n: int, seed: int = 0, stages: int = 4) -> Instance:
    """``stages`` forks of about ``n / stages`` tasks (a few long, many short), each closed by a join."""
    b = _Builder(f"syn-forkjoin-{n}", seed)
    width = max(2, n // stages - 1)
    top = b.add(2.0)
    for _ in range(stages):
        fork = [b.add(20.0 if b.rng.random() < 0.05 else 1.0, [top]) for _ in range(width)]
        top = b.add(2.0, fork)
    return b.done()


RECIPES: dict[str, Callable[..., Instance]] = {
    "montage": montage, "epigenomics": epigenomics, "genome": genome, "layered": layered, "forkjoin": forkjoin,
}

#: the default set: every recipe at two or three sizes between 100 and 1,000 tasks
DEFAULT_SET = [("montage", 120), ("montage", 600), ("epigenomics", 200), ("epigenomics", 1000),
               ("genome", 300), ("genome", 900), ("layered", 150), ("layered", 1000),
               ("forkjoin", 100), ("forkjoin", 800)]


def instances(tiny: bool = False) -> list[Instance]:
    """The default synthetic set (``tiny``: two small ones)."""
    chosen = [("montage", 60), ("layered", 60)] if tiny else DEFAULT_SET
    return [RECIPES[recipe](n, seed=i) for i, (recipe, n) in enumerate(chosen)]
