"""Waiting for a run: until every node has its final state, and announcing its end.

:class:`RunWaiting` is a part of :class:`~cleo_dask.runs.run.Run` (a mixin over its fields).
Three ways of waiting share it: a caller blocking in ``result()`` / ``wait()`` / ``done()``
(:meth:`RunWaiting._settle`, which also handles erred keys the driver has not reached yet), the
client's event loop waiting for the current futures while the run may replace some of them
(:meth:`RunWaiting._wait_current`), and the driver deciding whether the run has ended
(:meth:`RunWaiting._maybe_finished`, which tells the engine once).
"""
from __future__ import annotations

import asyncio
import time

from distributed import Future

from cleo_dask.errors import ClusterLost
from cleo_dask.util.futures import all_done as _all_done


class RunWaiting:
    """The waiting part of :class:`~cleo_dask.runs.run.Run` (see the module docstring)."""

    def _settle(self, timeout: float | None) -> bool:
        """Wait until every node has its final state; False on timeout; :class:`ClusterLost` if the
        client lost the scheduler (or was closed) first."""
        if self._final_status is not None and self._lost is None:
            return True  # it ended before its client went (closed, or lost its scheduler): it stays so
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                futures = list(self._futures.values())
            if self._lost is not None or getattr(self._client, "status", "running") != "running":
                self._raise_if_lost(futures)  # reconnecting or closed: its futures were all cancelled
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                if any(f.status == "pending" for f in futures):
                    return False
            elif not all(f.done() for f in futures):   # all done: no hop to the client's loop
                try:
                    self._client.sync(self._wait_current, futures, remaining)
                except TimeoutError:
                    return False
            with self._lock:
                if self._timers or self._batch_unhandled():
                    if remaining is not None and remaining <= 0:
                        return False
                    self._changed.wait(0.05 if remaining is None else min(0.05, max(remaining, 0)))
                    continue
                if any(f.status == "pending" for f in self._futures.values()):
                    if remaining is not None and remaining <= 0:
                        return False
                    continue
                self._raise_if_lost(list(self._futures.values()))  # e.g. reconnected to a new scheduler
                handled = [k for k, f in list(self._futures.items())
                           if f.status == "error" and self._handle_erred_safely(k)]
                if handled or self._timers or self._batch_unhandled():
                    continue
                if self.ended is None:
                    self.ended = time.time()
                return True

    async def _wait_current(self, futures: list[Future], timeout: float | None) -> None:
        """Wait for ``futures`` on the client's loop, or until the run replaces some of them."""
        interrupt = asyncio.Event()
        self._interrupts.add(interrupt)
        waiter = asyncio.ensure_future(_all_done(futures))
        stopper = asyncio.ensure_future(interrupt.wait())
        try:
            done, _ = await asyncio.wait({waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                raise TimeoutError
            if waiter in done and waiter.exception() is not None:
                raise waiter.exception()
        finally:
            self._interrupts.discard(interrupt)
            for f in (waiter, stopper):
                if not f.done():
                    f.cancel()

    def _interrupt_waiters(self) -> None:
        for interrupt in list(self._interrupts):
            self._client.loop.add_callback(interrupt.set)

    def _any_pending(self) -> bool:
        """Whether some current future is pending.  Called once per finished sink, so it must not
        scan every future each time: a cursor skips the ones already seen done, and only a
        "nothing pending" answer is confirmed by a full scan (a retried future turns pending again)."""
        futs = list(self._futures.values()) if self._scan is None else self._scan
        self._scan = futs
        i = self._scan_pos
        while i < len(futs) and futs[i].status != "pending":
            i += 1
        self._scan_pos = i
        if i < len(futs):
            return True
        self._scan, self._scan_pos = None, 0
        return any(f.status == "pending" for f in self._futures.values())

    def _maybe_finished(self) -> None:
        """Called on the driver when watched sinks are done: announce the run's end if it ended."""
        with self._lock:
            if self._finished_event_sent or self._timers:
                return  # a retry's timer watches its keys again when it fires
            pending = self._any_pending()
        try:
            settled = not pending and self._settle(timeout=0.5)
        except ClusterLost:
            settled = True  # the run ended there: announce it (the journal marks it interrupted)
            if self.ended is None:
                self.ended = time.time()
        if not settled:
            # a sink erred while other branches still run (its failed ancestor's siblings), or the
            # slow path is still busy: look again once what is pending now is done
            with self._lock:
                self._watch([f for f in self._futures.values() if f.status == "pending"])
            return
        with self._lock:
            if self._finished_event_sent:
                return
            self._finished_event_sent = True
            self._final_status = self._status_now()
            self._drop_retired()   # nothing retries now: the replaced keys can go (runs.retire)
        self._context.on_finished(self)
