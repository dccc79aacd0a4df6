"""Runs sent in one burst collect their workers' records together (``runs.metapeers``), and a run
doing so never waits for a peer another thread is busy with (two children of one burst ending
at once used to deadlock: each held its own lock and waited for the other's)."""
from __future__ import annotations

import threading

from cleo_dask.runs.metapeers import MetaPeers, fetch_with_peers


class RunRecords:
    """What ``fetch_with_peers`` asks of a run: its missing records, a place to keep them."""

    def __init__(self, run_id: str, keys: list[str]):
        self.id = run_id
        self.lock = threading.RLock()
        self.keys = keys
        self.kept: list[str] = []

    def missing_metas(self, wait: bool = True):
        if not self.lock.acquire(blocking=wait):
            return None
        try:
            return [k for k in self.keys if k not in self.kept]
        finally:
            self.lock.release()

    def put_metas(self, keys, batches, losses, wait: bool = True) -> bool:
        if not self.lock.acquire(blocking=wait):
            return False
        try:
            self.kept.extend(keys)
            return True
        finally:
            self.lock.release()


def test_a_run_never_waits_for_a_busy_peer(client):
    mine, busy, free = RunRecords("mine", ["k-mine"]), RunRecords("busy", ["k-busy"]), RunRecords("free", ["k-free"])
    MetaPeers([mine, busy, free])
    held, release = threading.Event(), threading.Event()

    def building_its_outcome():   # another thread holds the busy peer meanwhile
        with busy.lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=building_its_outcome, daemon=True)
    holder.start()
    held.wait(5)
    fetcher = threading.Thread(target=fetch_with_peers, args=(client, mine, ["k-mine"], 100), daemon=True)
    fetcher.start()
    fetcher.join(15)
    release.set()
    assert not fetcher.is_alive(), "fetch_with_peers waited for a peer held by another thread"
    assert mine.kept == ["k-mine"] and free.kept == ["k-free"]
    assert busy.kept == []            # collects its own records later
    assert mine.metas_peers.others(free) == [busy]   # still waiting for its records, it stays a peer
