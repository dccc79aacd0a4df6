"""Batches: a layered no-op DAG end to end, batched (``cleo_dask.batch.force``) and not, same engine.

Layered DAG (100 layers, 1-3 parents from the previous layer), no-op tasks; a LocalCluster of
2 worker processes x 1 thread.  For each mode: ``s`` from ``engine.submit`` (workflow built
beforehand) through every node done to the sink values read, the Dask tasks sent (``units``),
and the peak resident memory of this process (client + scheduler) plus its children (workers),
sampled every 0.2 s.

    python -m benchmarks.batches [SIZE] [batched|plain|both]     (default 100,000 both)
"""
from __future__ import annotations

import sys
import threading
import time

import dask
import psutil

from . import _shapes as s


class _Peak:
    """Peak resident memory of this process and its children, sampled in a thread."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.2):
            total = me.memory_info().rss
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run(n: int, modes: tuple[bool, ...] = (True, False)) -> list[dict]:
    """The modes (batched: True), in order, on one cluster; one row each."""
    import cleo_dask as cd
    from cleo_dask.admission.cluster_needs import scheduler_settings
    from distributed import Client, LocalCluster

    shape = s.layered(n)
    wf = s.workflow(shape)
    sinks = s.sinks(shape)
    rows = []
    with dask.config.set(scheduler_settings()):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    with cluster, Client(cluster) as client, cd.Engine(client=client) as engine:
        for force in modes:
            peak = _Peak()
            t0 = time.perf_counter()
            with dask.config.set({"cleo_dask.batch.force": force}):
                r = engine.submit(wf, cd.Agent("bench"))
            units = len(r.futures and set(f.key for f in r.futures.values()))
            out = r.result()
            out.values_by_node(sinks)
            took = time.perf_counter() - t0
            assert out.counts() == {"succeeded": n}, out.counts()
            rows.append({"nodes": n, "batched": force, "units": units, "s": round(took, 2),
                         "ms_per_node": round(1000 * took / n, 4),
                         "peak_rss_gib_all_processes": round(peak.stop() / 2**30, 2)})
            r.release()
    return rows


if __name__ == "__main__":
    mode = sys.argv[2] if len(sys.argv) > 2 else "both"
    chosen = {"batched": (True,), "plain": (False,), "both": (True, False)}[mode]
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, chosen):
        print(row)
