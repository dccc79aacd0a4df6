"""Bulk operations on many ``distributed`` futures at the cost of one.

A run holds one future per Dask task (thousands).  ``distributed.wait`` makes an asyncio task
and a timeout per future, and ``Future.release`` one loop callback and one scheduler message per
future; on a 10,000-node workflow those alone cost about a second of the client's (and, on a
``LocalCluster``, the scheduler's) event loop.  These do the same work in one pass.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from distributed import Future

logger = logging.getLogger("cleo_dask")


async def all_done(futures: Sequence[Future]) -> None:
    """Return once every future is done (finished, erred, cancelled), on the client's loop.

    Awaiting them one after the other costs nothing for those already done, and the total wait
    is the same: every one of them has to be done anyway."""
    for f in futures:
        if not f.done():
            await f._state.wait()


def erred_exception(future: Future) -> BaseException | None:
    """The exception of ``future`` if it is in error now, else ``None``; never waits.

    ``Future.exception()`` waits for the future to be done and returns ``None`` when it is not
    in error *then*: a key retried meanwhile (``Client.retry``, or the scheduler's
    ``task-retried`` when an erred ancestor is retried) turns pending and makes it block until
    the key finishes; a key reported erred after the task it blames was retried carries no
    exception at all (the scheduler cleared it).  This reads the state the client has now."""
    if future.status != "error":
        return None
    state = getattr(future, "_state", None)
    exc = getattr(state, "exception", None)
    if exc is None or future.status != "error":
        return None
    return exc if isinstance(exc, BaseException) else Exception(repr(exc))


def cancel_reason(future: Future) -> str | None:
    """Why distributed cancelled ``future`` (``"scheduler-connection-lost"``, ...); ``None`` if it
    is not cancelled, ``"unknown"`` when no reason was given."""
    if future.status != "cancelled":
        return None
    exc = getattr(getattr(future, "_state", None), "exception", None)
    return getattr(exc, "reason", None) or "unknown"


def release_futures(client: Any, futures: Sequence[Future]) -> None:
    """``Future.release`` for many futures of ``client``: one loop callback and one
    ``client-releases-keys`` message for all the keys whose last reference this was."""
    mine = []
    for f in futures:
        if not f._cleared and f.client is client and client.generation == f._generation:
            f._cleared = True
            mine.append(f.key)
    if mine:
        try:
            client.loop.add_callback(_dec_refs, client, mine)
        except TypeError:  # the client is shutting down (as Future.release does)
            pass


def _dec_refs(client: Any, keys: list[Any]) -> None:
    try:
        released = []
        with client._refcount_lock:
            for key in keys:
                client.refcount[key] -= 1
                if client.refcount[key] == 0:
                    del client.refcount[key]
                    released.append(key)
    except AttributeError:  # a distributed without these internals: one key at a time
        for key in keys:
            client._dec_ref(key)
        return
    for key in released:
        state = client.futures.pop(key, None)
        if state is not None:
            state.cancel()
    if released and client.status != "closed":
        client._send_to_scheduler({"op": "client-releases-keys", "keys": released, "client": client.id})


def worker_losses(client: Any, key: Any, error: BaseException | None) -> int:
    """How many workers died running ``key``, if ``error`` is Dask's ``KilledWorker`` (else 0).

    The scheduler's count for the key (it grows over retries of the same key); when it cannot
    be asked, the losses that made Dask give up (``allowed-failures`` + 1).
    """
    from distributed.scheduler import KilledWorker
    if not isinstance(error, KilledWorker):
        return 0
    try:
        return int(client.run_on_scheduler(_suspicious_count, key)) or error.allowed_failures + 1
    except Exception:  # noqa: BLE001 - a scheduler that cannot answer: what the error says
        return error.allowed_failures + 1


def lost_elsewhere(error: BaseException | None, key: Any) -> bool:
    """True if ``error`` is a ``KilledWorker`` of another key (an ancestor whose workers died)."""
    from distributed.scheduler import KilledWorker
    return isinstance(error, KilledWorker) and error.task != key


def _suspicious_count(key: Any, dask_scheduler: Any = None) -> int:
    ts = dask_scheduler.tasks.get(key)
    return ts.suspicious if ts is not None else 0
