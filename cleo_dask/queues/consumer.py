"""The consumer: requests from a :class:`Source` become ordinary runs, their outcomes go to a
:class:`Sink` once journaled, and only then are the requests acknowledged.

* At most ``max_in_flight`` runs at once: with no free slot it reads nothing (back-pressure).
* The request id is the run's idempotency key: its run id is derived from it.  A request whose
  run the journal already has is not run again: an ended run's outcome is published (unless the
  ledger says it was), a run left running or interrupted by a dead engine is resumed from the
  journal.  A run another live process of this host still runs is left to it.
* A bad request (not JSON, a bad field, an unknown target, an invalid spec) is answered with its
  error and acknowledged.  Broker errors (a restart) are waited out; nothing taken is dropped.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

from cleo_dask import config as _config
from cleo_dask.durable.journal import HOST
from cleo_dask.errors import ClusterError, StoreError
from cleo_dask.queues.base import Delivery, Queue, QueueError, Sink, Source
from cleo_dask.queues.brokers import open_broker
from cleo_dask.queues.intake import submit_arguments
from cleo_dask.queues.ledger import Ledger
from cleo_dask.queues.outcome import ENDED, from_journal, rejection, sinks_of
from cleo_dask.queues.publish import run_sync
from cleo_dask.queues.request import BadRequest, Request, parse, request_id_of

logger = logging.getLogger("cleo_dask")


@dataclass(eq=False)
class _Entry:
    request: Request
    deliveries: list[Delivery]
    run: Any = None                 # None: already ended in the journal
    message: dict[str, Any] | None = None
    extra: list[Delivery] = field(default_factory=list)


class Consumer:
    """Consumes ``queue`` for ``engine`` (journaling in ``durable``) until ``stop`` is set, or
    ``limit`` requests are answered.  ``prepare`` / ``launch`` / ``as_workflow``: the engine's
    own steps of a submission.  ``name``: this consumer in the group (default: host, pid, random)."""

    def __init__(self, engine: Any, durable: Any, queue: Queue, *, prepare: Callable[..., Any],
                 launch: Callable[..., Any], as_workflow: Callable[[Any], Any], max_in_flight: int | None = None,
                 stop: threading.Event | None = None, limit: int | None = None, batch: int | None = None,
                 name: str | None = None):
        self.engine, self.durable, self.queue = engine, durable, queue
        self._prepare, self._launch, self._as_workflow = prepare, launch, as_workflow
        self.max_in_flight = int(max_in_flight or _config.get("queues.max-in-flight", 500))
        if self.max_in_flight < 1:
            raise QueueError(f"max_in_flight must be at least 1, got {max_in_flight!r}")
        self.batch = int(batch or _config.get("queues.batch", 100))
        self.stop = stop or threading.Event()
        self.limit = limit
        self.name = name or f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.counts: Counter[str] = Counter()
        self.inflight: dict[str, _Entry] = {}
        self._ended: deque[str] = deque()
        self._ready: list[_Entry] = []
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waking = False

    # -- the engine's side ------------------------------------------------------------------
    def _on_run(self, kind: str, run: Any) -> None:
        if kind == "finished":
            self._ended.append(run.id)
            if self._loop is not None and self._wake is not None and not self._waking:
                self._waking = True   # runs ending together: one hop to the loop, not one each
                self._loop.call_soon_threadsafe(self._woken)

    def _woken(self) -> None:
        self._waking = False
        if self._wake is not None:
            self._wake.set()

    def run(self) -> dict[str, int]:
        """Consume until stopped; the counts (``runs``, ``resumed``, ``outcomes``, ``rejected``, ...)."""
        ledger = Ledger(self.durable.store.journal)
        self.ledger = ledger
        self.engine.add_listener(self._on_run)
        try:
            run_sync(self._main())
        finally:
            self.engine.launcher.listeners.remove(self._on_run)
            ledger.close()
        return {key: self.counts[key] for key in ("runs", "resumed", "outcomes", "rejected", "duplicates")}

    def _done(self) -> bool:
        answered = self.counts["outcomes"] + self.counts["rejected"] + self.counts["duplicates"]
        return self.stop.is_set() or (self.limit is not None and answered >= self.limit)

    async def _main(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        source, sink = open_broker(self.queue, self.name)
        claim_every = min(self.queue.claim_after / 3, 5.0)
        next_claim, connected, problem = 0.0, False, None
        low = min(self.batch, max(1, self.max_in_flight // 4))
        next_touch = time.monotonic() + claim_every
        try:
            while not self._done():
                try:
                    if not connected:
                        await source.connect()
                        connected = True
                    await self._finish(source, sink)
                    if time.monotonic() >= next_touch:
                        await source.touch([d for e in self.inflight.values() for d in e.deliveries])
                        next_touch = time.monotonic() + claim_every
                    free = self.max_in_flight - len(self.inflight)
                    if free <= 0 or (free < low and self.inflight):   # full: read again once a batch is free
                        self._wake.clear()
                        try:
                            await asyncio.wait_for(self._wake.wait(), 0.5)
                            await asyncio.sleep(0.01)   # answer the runs ending together at once
                        except asyncio.TimeoutError:
                            pass
                        continue
                    got: list[Delivery] = []
                    if time.monotonic() >= next_claim:
                        got = await source.claim(min(free, self.batch))
                        next_claim = time.monotonic() + claim_every
                    if len(got) < free:
                        wait = 0.02 if (self.inflight or self._ended) else 0.5
                        got += await source.fetch(min(free - len(got), self.batch), wait)
                    if got:
                        await self._take(got, source, sink)
                    problem = None
                except ClusterError:   # the engine's client is closed: stop; what is not acked stays queued
                    raise
                except Exception as exc:  # noqa: BLE001 - the broker restarts: wait, then go on
                    if str(exc) != problem:
                        logger.warning("queue %s: %s: %s; retrying", self.queue.url, type(exc).__name__, exc)
                        problem = str(exc)
                    if "NOGROUP" in str(exc):
                        connected = False
                    await asyncio.sleep(0.5)
        finally:
            try:
                await source.close()
            except Exception:  # noqa: BLE001
                logger.debug("closing the queue connection failed", exc_info=True)

    # -- taking requests ----------------------------------------------------------------------
    async def _take(self, deliveries: list[Delivery], source: Source, sink: Sink) -> None:
        rejects: list[tuple[str, dict[str, Any], Delivery]] = []
        good: list[tuple[Request, Delivery]] = []
        for d in deliveries:
            try:
                good.append((parse(d.body), d))
            except BadRequest as exc:
                rejects.append((f"rejected:{d.message_id}", rejection(request_id_of(d.body), exc, d.message_id), d))
        published = self.ledger.published(r.id for r, _ in good)
        known = self.durable.journal.statuses(r.run_id for r, _ in good)
        acks: list[Delivery] = []
        new: list[tuple[_Entry, Any]] = []
        for req, d in good:
            rid = req.run_id
            if rid in self.inflight:
                self.inflight[rid].deliveries.append(d)   # delivered again while it runs here
                self.counts["duplicates"] += 1
                continue
            if req.id in published:
                self.counts["duplicates"] += 1
                acks.append(d)
                continue
            status = known.get(rid, (None, 0))[0]
            entry = _Entry(req, [d])
            if status is None:
                try:
                    prepared = self._prepare(**submit_arguments(req))
                except (ClusterError, StoreError):   # not the request's fault: it stays with the broker
                    self._forget(e for e, _ in new)
                    raise
                except Exception as exc:  # noqa: BLE001 - unknown target, invalid spec or inputs
                    rejects.append((f"rejected:{d.message_id}", rejection(req.id, exc, d.message_id), d))
                    continue
                entry.run = prepared[0]
                self.inflight[rid] = entry
                new.append((entry, prepared))
            elif status in ENDED:
                self.inflight[rid] = entry
                self._ready.append(entry)      # its outcome comes from the journal
            else:
                self._resume(entry, rid)
        if new:
            self._start(new)
        if rejects:
            await sink.publish([(key, msg) for key, msg, _ in rejects])
            self.counts["rejected"] += len(rejects)
            acks.extend(d for _, _, d in rejects)
        await self._ack(source, acks)

    def _start(self, new: list[tuple[_Entry, Any]]) -> None:
        try:
            self._launch([p for _, p in new])
            self.counts["runs"] += len(new)
            return
        except StoreError:   # another engine journaled one of them first: one by one
            pass
        except BaseException:   # the cluster is gone: the requests stay with the broker
            self._forget(e for e, _ in new)
            raise
        for entry, prepared in new:
            try:
                self._launch([prepared])
                self.counts["runs"] += 1
            except StoreError as exc:
                logger.info("request %s: not started here (%s); it is delivered again later", entry.request.id, exc)
                self.inflight.pop(entry.request.run_id, None)

    def _forget(self, entries: Any) -> None:
        for entry in entries:
            self.inflight.pop(entry.request.run_id, None)

    def _resume(self, entry: _Entry, rid: str) -> None:
        mine = self.engine.runs_in_memory.get(rid)
        self.inflight[rid] = entry
        if mine is not None and not mine.done():
            entry.run = mine
            return
        try:
            if self.durable.journal.run(rid).status in ENDED:   # ended since we looked: answer it
                entry.run = None
                self._ready.append(entry)
                return
            entry.run = self.durable.resume(rid)
            self.counts["resumed"] += 1
        except StoreError as exc:   # e.g. another live process still runs it: its engine answers
            logger.info("request %s: run %s not resumed here: %s", entry.request.id, rid, exc)
            self.inflight.pop(rid, None)

    # -- answering ----------------------------------------------------------------------------
    async def _finish(self, source: Source, sink: Sink) -> None:
        while self._ended:
            rid = self._ended.popleft()
            entry = self.inflight.get(rid)
            if entry is not None and entry.run is not None and entry not in self._ready:
                self._ready.append(entry)
        if not self._ready:
            return
        batch, self._ready = self._ready, []
        for entry in batch:
            if entry.message is None and entry.run is not None:
                self.durable.wait_journaled(entry.request.run_id)
        known = self.durable.journal.statuses(e.request.run_id for e in batch if e.message is None)
        out = []
        for entry in batch:
            if entry.message is None:
                try:
                    entry.message = self._message(entry, known.get(entry.request.run_id))
                except StoreError as exc:   # interrupted (cluster lost): a later delivery resumes it
                    logger.warning("request %s: no outcome (%s); it is delivered again later", entry.request.id, exc)
                    self.inflight.pop(entry.request.run_id, None)
                    continue
            out.append(entry)
        sent = time.time()
        for e in out:
            e.message.setdefault("sent", sent)   # when the outcome left (publish to outcome: latency)
        try:
            await sink.publish([(e.request.id, e.message) for e in out])
        except BaseException:
            self._ready = out + self._ready     # published again (idempotently) once the broker is back
            raise
        self.ledger.mark((e.request.id, e.request.run_id, e.message["status"]) for e in out)
        self.counts["outcomes"] += len(out)
        for e in out:
            self.inflight.pop(e.request.run_id, None)
        await self._ack(source, [d for e in out for d in e.deliveries])

    async def _ack(self, source: Source, deliveries: list[Delivery]) -> None:
        try:
            await source.ack(deliveries)
        except Exception as exc:  # noqa: BLE001 - delivered again later: the ledger answers them
            logger.debug("acknowledging %d request(s) failed: %s", len(deliveries), exc)

    def _message(self, entry: _Entry, known: tuple[str, int] | None) -> dict[str, Any]:
        rid = entry.request.run_id
        if known is None or known[0] not in ENDED:
            raise StoreError(f"run {rid} is journaled {known[0] if known else 'nowhere'}")
        if entry.run is not None:
            workflow = entry.run.workflow
        else:
            workflow = self.durable.journal.load_spec(rid)["workflow"]
        message = from_journal(self.durable, entry.request.id, rid, sinks_of(workflow), *known)
        return message

