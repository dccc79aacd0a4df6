"""Sending events to the scheduler's event log without making the caller wait.

``Client.log_event`` is a round trip.  :class:`EventSender` queues events on the client's event
loop and sends them one after the other, so they arrive in the order they were sent; a caller
that needs an event to be on the scheduler before what it does next (a run's announcement before
its graph) passes ``wait=True``.  :meth:`EventSender.retire` queues the end of a topic behind
its last events (see :mod:`cleo_dask.runs.forget`).  Events queued while one is being sent go
together in the next call (many small runs ending at once announce their ends in one call).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

from distributed.protocol.pickle import dumps

logger = logging.getLogger("cleo_dask")
_RETIRE = object()   # a queued retire(topic), in order with the events
RETIRE_EVERY = 0.5   # seconds: topics of runs ending meanwhile are retired in one call
SEND_MAX = 500   # events queued meanwhile sent in one call at most


class EventSender:
    """An ordered, fire-and-forget channel of events from one client to its scheduler."""

    def __init__(self, client: Any):
        self._client = client
        self._queue: asyncio.Queue | None = None

    def send(self, topic: str, msg: dict[str, Any], wait: bool = False, timeout: float = 30.0) -> None:
        """Queue ``msg`` under ``topic``; with ``wait``, return once the scheduler has it."""
        done: concurrent.futures.Future | None = concurrent.futures.Future() if wait else None
        self._client.loop.add_callback(self._put, topic, msg, done)
        if done is not None:
            done.result(timeout=timeout)

    def retire(self, topic: str) -> None:
        """Forget ``topic`` on the scheduler and on this client once every event queued so far
        for it is sent (topics of runs ending within :data:`RETIRE_EVERY` go in one call)."""
        self._client.loop.add_callback(self._put, _RETIRE, topic, None)

    def wait_sent(self, timeout: float = 30.0) -> None:
        """Return once everything queued so far (events, retired topics) has been handled."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._client.loop.add_callback(self._put, None, None, done)
        done.result(timeout=timeout)

    async def _retire(self, topics: list[str]) -> None:
        from cleo_dask.runs.forget import retire
        try:
            await retire(self._client, topics)
        except Exception:  # noqa: BLE001 - forgetting is best effort
            logger.debug("could not retire topics", exc_info=True)

    async def _put(self, topic: str, msg: dict[str, Any], done: concurrent.futures.Future | None) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue()
            asyncio.ensure_future(self._pump(self._queue))
        await self._queue.put((topic, msg, done))

    async def _pump(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        retiring: list[str] = []   # topics to retire: at most one call per RETIRE_EVERY seconds
        last = -RETIRE_EVERY
        carry = None   # an item taken while gathering events to send together, handled next
        while True:
            if carry is not None:
                item, carry = carry, None
            elif retiring:
                try:
                    item = await asyncio.wait_for(queue.get(), max(0.0, last + RETIRE_EVERY - loop.time()))
                except asyncio.TimeoutError:
                    item = None
            else:
                item = await queue.get()
            if item is not None and item[0] is _RETIRE:
                retiring.append(item[1])
            if retiring and (item is None or item[0] is None or loop.time() - last >= RETIRE_EVERY):
                await self._retire(retiring)
                retiring, last = [], loop.time()
            if item is None or item[0] is _RETIRE:
                continue
            topic, msg, done = item
            if topic is None:  # wait_sent()'s marker
                done.set_result(None)
                continue
            batch = [item]   # the events queued meanwhile go with it, in one call (in order)
            while len(batch) < SEND_MAX and not queue.empty():
                nxt = queue.get_nowait()
                if nxt[0] is _RETIRE:   # retired after this batch is sent (behind its events)
                    retiring.append(nxt[1])
                    continue
                if nxt[0] is None:
                    carry = nxt
                    break
                batch.append(nxt)
            try:
                await self._send(batch)
            finally:
                for _, _, done in batch:
                    if done is not None and not done.done():
                        done.set_result(None)

    async def _send(self, batch: list[tuple[str, dict[str, Any], Any]]) -> None:
        if len(batch) > 1:
            try:
                reply = await self._client.scheduler.run_function(
                    function=dumps(log_events), args=dumps(([(t, m) for t, m, _ in batch],)), kwargs=dumps({}),
                    wait=True)
                if reply.get("status") == "OK":
                    return
            except Exception:  # noqa: BLE001 - e.g. cleo_dask not importable there: one call each
                logger.debug("could not send %d events at once", len(batch), exc_info=True)
        for topic, msg, _ in batch:
            try:
                await self._client.scheduler.log_event(topic=topic, msg=msg)
            except Exception:  # noqa: BLE001 - monitoring must never break a run
                logger.debug("could not send event %s", msg.get("kind"), exc_info=True)


def log_events(events: list[tuple[str, dict[str, Any]]], dask_scheduler: Any = None) -> int:
    """On the scheduler: log many events at once, in order."""
    for topic, msg in events:
        dask_scheduler.log_event(topic, msg)
    return len(events)
