"""Failures that cost nothing while nothing fails, and hold no worker while a retry waits.

1. ``backoff``: 40 independent tasks of 0.25 s on the cluster's slots (2: ideal makespan 5 s), 3 of
   which fail their first attempt and retry after a 4 s backoff.  A backoff that held its slot would
   give about 2x the ideal; the target is <= 1.05 (the key waits on the scheduler, on no worker).
2. ``layered``: the layered 10,000-node DAG of no-ops (100 layers, 1-3 parents, seeded) with 1 % of
   its tasks failing once, as a ratio to the same DAG with no failures: retried at once by Dask
   (``retries=1``: the fast path), and after a 0.1 s backoff (held on the scheduler when run
   alone, waited for outside the pool in a batch; its descendants never erring; target <= 1.2).
   Also the backoff workflow with nothing failing (the policy's own cost), and the longest chain
   of 0.1 s waits on one path (:func:`delay_floor`: a bound no engine beats).  ``--backoff-size N``
   adds an N-node DAG with the backoff alone.

A task "fails once" by creating a marker file (atomically, so it works across worker processes):
the attempt that creates it raises, later attempts succeed.

    python -m benchmarks.failures [--tiny] [--json FILE] [--reps N]
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from typing import Any

from . import _harness as h
from . import _shapes as s


class Work:
    """A task that sleeps ``seconds``; with ``marker`` set, its first attempt fails."""

    def __init__(self, seconds: float = 0.0, marker: str | None = None):
        self.seconds = seconds
        self.marker = marker

    def run(self, agent: Any, **inputs: Any) -> None:
        if self.marker is not None:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                raise ConnectionError("first attempt fails (benchmark)")
        if self.seconds:
            time.sleep(self.seconds)


def backoff_workflow(n: int, seconds: float, failing: int, backoff: float, marker_dir: str) -> Any:
    """``n`` independent sleeping tasks; the first ``failing`` fail once and retry after ``backoff``."""
    import cleo_dask as cd

    wf = cd.Workflow("backoff")
    for i in range(n):
        marker = os.path.join(marker_dir, f"t{i}") if i < failing else None
        wf.add(Work(seconds, marker), name=f"t{i}", retries=1, backoff=cd.fixed(backoff))
    return wf


def layered_workflow(shape: s.Shape, fraction: float, backoff: float | None, marker_dir: str | None,
                     seed: int = 1) -> Any:
    """The layered DAG; a seeded ``fraction`` of nodes fail once (``backoff``: None = Dask retries)."""
    import cleo_dask as cd

    failing = failing_nodes(shape, fraction, seed) if marker_dir else set()
    opts: dict[str, Any] = {"retries": 1} if backoff is None else {"retries": 1, "backoff": cd.fixed(backoff)}
    wf = cd.Workflow("layered-failures")
    plain = cd.task(s.agent_noop, name="noop")
    for n, ps in shape.items():
        if n in failing:
            wf.add(Work(0.0, os.path.join(marker_dir, n)), name=n, after=ps, **opts)
        elif marker_dir:
            wf.add(plain, name=n, after=ps, **opts)
        else:
            wf.add(plain, name=n, after=ps)
    return wf


def failing_nodes(shape: s.Shape, fraction: float, seed: int = 1) -> set[str]:
    """The seeded ``fraction`` of ``shape``'s nodes that fail once."""
    return set(random.Random(seed).sample(list(shape), int(len(shape) * fraction)))


def delay_floor(shape: s.Shape, failing: set[str], backoff: float) -> float:
    """The longest chain of waits: the most ``backoff`` delays on one path of ``shape`` (seconds).
    No engine that waits ``backoff`` before each retry finishes the run's last node sooner than
    this plus the work along that path."""
    waited: dict[str, float] = {}
    for n, ps in shape.items():   # topological order
        waited[n] = max((waited[p] for p in ps), default=0.0) + (backoff if n in failing else 0.0)
    return max(waited.values(), default=0.0)


def _runner(engine: Any, agent: Any, shape: s.Shape) -> Any:
    """A contender's timed step: run a workflow of ``shape``, check every node ended well, fetch the sinks."""
    out_sinks = s.sinks(shape)

    def run(wf: Any) -> None:
        done = engine.submit(wf, agent)
        outcome = done.result()
        assert outcome.ok, outcome.counts()
        outcome.values_by_node(out_sinks)
        done.release()

    return run


def _marker_dir() -> str:
    return tempfile.mkdtemp(prefix="cleo-bench-fail-")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0."""
    import cleo_dask as cd

    p = h.parser(__doc__)
    p.add_argument("--part", choices=["backoff", "layered"], action="append", default=None,
                   help="run only this part (repeatable)")
    p.add_argument("--backoff-size", type=int, default=None,
                   help="also an N-node layered DAG whose 1%% failures retry after a backoff")
    args = p.parse_args(argv)
    parts = args.part or ["backoff", "layered"]
    rows: list[dict[str, Any]] = []
    with h.cluster(args) as client, cd.Engine(client=client) as engine:
        agent = cd.Agent("bench")
        P = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
        engine.run(s.agent_noop, agent)  # warm-up
        dirs: list[str] = []

        def fresh() -> str:
            d = _marker_dir()
            dirs.append(d)
            return d

        try:
            if "backoff" in parts:
                n, seconds, failing, backoff = (8, 0.1, 1, 0.2) if args.tiny else (40, 0.25, 3, 4.0)
                ideal = n * seconds / P

                def run_backoff(wf: Any) -> None:
                    outcome = engine.submit(wf, agent).result()
                    assert outcome.ok, outcome.counts()
                    retried = sum(len(r.attempts) > 1 for r in outcome.values())
                    assert retried == failing, retried

                found = {"cleo": h.Contender(run_backoff, setup=lambda: backoff_workflow(n, seconds, failing, backoff,
                                                                                         fresh()))}
                for row in h.compare(f"backoff-{n}x{seconds}s", found, args, tasks=n, client=client, default_reps=1):
                    row.update(ideal_s=round(ideal, 3), backoff_s=backoff, failing=failing,
                               makespan_s=row.get("median_s"),
                               ratio=round(row["median_s"] / ideal, 3) if row.get("median_s") else None,
                               held_slot_s=round(ideal + failing * backoff / P, 3))
                    rows.append(row)
            if "layered" in parts:
                size = 300 if args.tiny else 10_000
                shape = s.layered(size, layers=10 if args.tiny else 100)
                run_layered = _runner(engine, agent, shape)

                floor = delay_floor(shape, failing_nodes(shape, 0.01), 0.1)
                found = {
                    "no-failures": h.Contender(run_layered, setup=lambda: layered_workflow(shape, 0.01, None, None)),
                    "no-failures-backoff-declared": h.Contender(
                        run_layered, setup=lambda: layered_workflow(shape, 0.0, 0.1, fresh()),
                        note="retries=1, backoff=fixed(0.1) on every node, nothing fails"),
                    "1%-dask-retry": h.Contender(run_layered, setup=lambda: layered_workflow(shape, 0.01, None, fresh()),
                                                 note="retries=1, no backoff: Dask's own retries"),
                    "1%-backoff-0.1s": h.Contender(run_layered, setup=lambda: layered_workflow(shape, 0.01, 0.1, fresh()),
                                                   note=f"retries=1, backoff=fixed(0.1); longest chain of waits "
                                                        f"{floor:.1f} s"),
                }
                rows += h.compare(f"layered-{size}", found, args, tasks=size, baseline="no-failures", client=client)
            if "layered" in parts and args.backoff_size and not args.tiny:
                small = args.backoff_size
                sshape = s.layered(small, layers=100)
                run_small = _runner(engine, agent, sshape)

                found = {
                    "no-failures": h.Contender(run_small, setup=lambda: layered_workflow(sshape, 0.01, None, None)),
                    "1%-backoff-0.1s": h.Contender(run_small, setup=lambda: layered_workflow(sshape, 0.01, 0.1, fresh()),
                                                   note="retries=1, backoff=fixed(0.1): held on the scheduler"),
                }
                rows += h.compare(f"layered-{small}", found, args, tasks=small, baseline="no-failures", client=client,
                                  default_reps=1)
        finally:
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)
        h.report(rows, args, "failures",
                 ["case", "contender", "tasks", "median_s", "per_task_ms", "ideal_s", "ratio", "held_slot_s",
                  "cpu_ratio", "note"], client=client,
                 title="failures: backoff makespan / ideal; layered with 1 % failing once / no failures")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
