"""Telling a lost cluster from a cancelled run.

When its connection to the scheduler drops, a ``distributed.Client`` (2026.8, ``_reconnect``)
cancels *every* future it holds, finished ones included, with the reason
``"scheduler-connection-lost"``, sets its status to ``"connecting"``, tries to reconnect for its
connect timeout and then closes.  ``Client.restart`` cancels them with ``"scheduler-restart"``;
``Client.close`` releases them (no reason).  A run whose futures were taken away like that did
not end: its cluster (or its client) went away, and the run is *interrupted*, not cancelled.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from cleo_dask.errors import ClusterLost
from cleo_dask.util.futures import cancel_reason

#: distributed's cancel reasons that mean the cluster, not the run, went away
LOST_REASONS = {
    "scheduler-connection-lost": "lost its connection to the Dask scheduler",
    "scheduler-restart": "saw the Dask scheduler restart",
}
CLOSED = ("closing", "closed")


def scheduler_address(client: Any) -> str | None:
    """The address of ``client``'s scheduler (kept by a run: a closed client forgets it)."""
    try:
        return client.scheduler.address
    except AttributeError:
        return None


def client_closed(client: Any) -> bool:
    """Whether ``client`` is closing or closed."""
    return getattr(client, "status", None) in CLOSED


def lost_reason(client: Any, futures: Iterable[Any]) -> str | None:
    """Why ``futures`` (a run's current ones; the run cancelled none of them itself) were taken
    away by the client, or ``None`` if they were not."""
    closed = client_closed(client)
    for f in futures:
        reason = cancel_reason(f)
        if reason is None:
            continue
        if reason in LOST_REASONS:
            return LOST_REASONS[reason]
        if closed:
            return "was closed"
    return None


@contextlib.contextmanager
def quiet_if_reconnecting(client: Any) -> Iterator[None]:
    """Closing a client that is trying to reach a lost scheduler cancels its reconnection, which
    distributed logs as an ERROR with a ``CancelledError`` traceback: noise after the
    :class:`ClusterLost` that already said what happened.  Silence that logger meanwhile."""
    if getattr(client, "status", None) != "connecting":
        yield
        return
    log = logging.getLogger("distributed.client")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def cluster_lost(run_id: str, address: str | None, why: str, durable: bool) -> ClusterLost:
    """The :class:`ClusterLost` of run ``run_id``, saying what to do next."""
    then = ("the nodes that finished are kept in the journal: resume it (engine.resume / cleo-dask resume) "
            "once a cluster is back" if durable else
            "the outputs of its finished nodes went with the cluster: submit it again "
            "(an Engine(store=...) keeps them and can resume)")
    return ClusterLost(f"run {run_id} did not finish: the client {why} (scheduler {address or 'unknown'}); {then}",
                       address=address, run_id=run_id)
