"""Records of runs sent together, collected together: one ``Client.run`` for many runs.

A run collects its workers' small records (``compact_metas``) when its outcome is first built,
one ``Client.run`` and one ``run_on_scheduler`` each.  Many small runs sent at once (e.g. the
child runs a parent spawns in a burst, :mod:`cleo_dask.dynamic`) would then pay two round trips
each, one after the other on the engine's driver.  Runs given a common :class:`MetaPeers` instead
collect, with their own records, those of every peer whose units have finished by then, so a
burst of runs ending together costs a round trip or two in all.
"""
from __future__ import annotations

import itertools
import threading
import weakref
from typing import Any

from cleo_dask.runs.columns import compact_metas


class MetaPeers:
    """Runs whose records are collected together (held weakly; a run leaves once its records
    have been collected once)."""

    def __init__(self, runs: list[Any]):
        self._lock = threading.Lock()
        self._runs: dict[str, weakref.ref] = {run.id: weakref.ref(run) for run in runs}
        for run in runs:
            run.metas_peers = self

    def others(self, run: Any, scan: int = 256) -> list[Any]:
        """The first ``scan`` peers of ``run`` still waiting for records (those sent first, which
        tend to end first), ``run`` itself left out."""
        with self._lock:
            refs = list(itertools.islice(self._runs.items(), scan))
        out = []
        for run_id, ref in refs:
            peer = ref()
            if peer is None:
                self.leave(run_id)
            elif peer is not run:
                out.append(peer)
        return out

    def leave(self, run_id: str) -> None:
        """``run_id`` needs no more records (they are all here)."""
        with self._lock:
            self._runs.pop(run_id, None)


def suspicious(keys: list[str], dask_scheduler: Any = None) -> dict[str, int]:
    """On the scheduler: how many workers died running each of ``keys`` (those where any did)."""
    out = {}
    for k in keys:
        ts = dask_scheduler.tasks.get(k)
        if ts is not None and ts.suspicious:
            out[k] = ts.suspicious
    return out


def compact_metas_many(key_lists: list[list[str]], dask_worker: Any = None) -> list[Any]:
    """On a worker (``Client.run``): ``compact_metas`` of each list of keys."""
    return [compact_metas(keys, dask_worker) for keys in key_lists]


def fetch_with_peers(client: Any, run: Any, missing: list[str], limit: int) -> None:
    """Collect the records of ``missing`` (keys of ``run``) and those its peers lack, up to ``limit``
    keys in all, in one ``Client.run`` and one ``run_on_scheduler``; each run keeps its own."""
    peers: MetaPeers = run.metas_peers
    groups = [(run, missing)]
    total = len(missing)
    for peer in peers.others(run):
        if total >= limit:
            break
        # never wait for a peer's lock: its own thread may be building its outcome and be waiting
        # for ours (two runs of a burst ending at once: a deadlock); a busy peer collects alone
        keys = peer.missing_metas(wait=False)
        if keys and total + len(keys) <= limit:
            groups.append((peer, keys))
            total += len(keys)
    lists = [keys for _, keys in groups]
    answers = list(client.run(compact_metas_many, lists).values())
    losses = client.run_on_scheduler(suspicious, [k for keys in lists for k in keys])
    for i, (member, keys) in enumerate(groups):
        if member.put_metas(keys, [answer[i] for answer in answers], losses, wait=member is run):
            peers.leave(member.id)   # units finishing later (a bigger run) it collects alone
