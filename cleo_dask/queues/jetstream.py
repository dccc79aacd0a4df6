"""NATS JetStream: requests pulled by a durable consumer (the group) of the stream holding the
request subject, redelivered after the ack wait when an engine dies; outcomes published with a
``Nats-Msg-Id`` per request, so JetStream's duplicate window drops a second copy.

Streams that do not exist yet are created: ``queue.stream`` for the request subject and
``<stream>_RESULTS`` for the results subject (file storage).
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

from cleo_dask import config as _config
from cleo_dask.queues.base import Delivery, Producer, Queue, QueueError, Sink, Source


async def _connect(queue: Queue) -> Any:
    try:
        import nats
    except ImportError:  # pragma: no cover - a dependency
        raise QueueError("the nats-py package is needed for nats:// queues: pip install nats-py") from None
    return await nats.connect(queue.url, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                              allow_reconnect=True, connect_timeout=5)


async def _ensure_stream(js: Any, name: str, subject: str, duplicate_window: float) -> str:
    """The stream holding ``subject`` (``name``, created with file storage if no stream has it)."""
    import nats.js.errors
    from nats.js.api import StorageType
    try:
        return await js.find_stream_name_by_subject(subject)
    except nats.js.errors.NotFoundError:
        pass
    try:
        await js.add_stream(name=name, subjects=[subject], storage=StorageType.FILE,
                            duplicate_window=duplicate_window)
    except nats.js.errors.BadRequestError:  # created meanwhile by another engine
        return await js.find_stream_name_by_subject(subject)
    return name


async def _acked(futures: list[Any], timeout: float = 10.0) -> None:
    """Wait for JetStream's acks of published messages; a server that restarted meanwhile never
    sends some: a :class:`QueueError` then (the caller publishes again, deduplicated by its id)."""
    try:
        await asyncio.wait_for(asyncio.gather(*futures), timeout)
    except asyncio.TimeoutError:
        for f in futures:
            f.cancel()
        raise QueueError(f"JetStream did not acknowledge {sum(not f.done() for f in futures)} message(s) "
                         f"within {timeout:g} s") from None


def _results_stream(queue: Queue) -> str:
    return f"{queue.stream}_RESULTS".replace(".", "_")


class JetStreamBroker(Source, Sink):
    """One engine of the durable consumer ``queue.group`` on the request subject."""

    def __init__(self, queue: Queue, consumer: str):
        self.queue = queue
        self.consumer = consumer
        self.nc: Any = None
        self.js: Any = None
        self.sub: Any = None
        self.window = float(_config.get("queues.duplicate-window", 600))

    async def connect(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig
        self.nc = await _connect(self.queue)
        self.js = self.nc.jetstream()
        stream = await _ensure_stream(self.js, self.queue.stream, self.queue.request_subject, self.window)
        await _ensure_stream(self.js, _results_stream(self.queue), self.queue.results, self.window)
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=self.queue.claim_after, max_ack_pending=-1,
                                max_deliver=-1)
        self.sub = await self.js.pull_subscribe(self.queue.request_subject, durable=self.queue.group, stream=stream,
                                                config=config)

    async def fetch(self, n: int, timeout: float) -> list[Delivery]:
        import nats.errors
        try:
            msgs = await self.sub.fetch(batch=n, timeout=timeout)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return []
        return [self._delivery(m) for m in msgs]

    def _delivery(self, msg: Any) -> Delivery:
        meta = msg.metadata

        async def ack() -> None:
            await msg.ack_sync(timeout=5)   # the server has it (a lost plain ack would mean a redelivery)
        return Delivery(msg.data, str(meta.sequence.stream), ack, meta.num_delivered > 1, raw=msg)

    async def touch(self, deliveries: list[Delivery]) -> None:
        for d in deliveries:   # "working": the ack wait starts again
            await d.raw.in_progress()

    async def publish(self, outcomes: list[tuple[str, dict[str, Any]]]) -> None:
        futures = [await self.js.publish_async(self.queue.results, json.dumps(m).encode(),
                                               headers={"Nats-Msg-Id": f"cleo-outcome:{key}"})
                   for key, m in outcomes]
        await _acked(futures)

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


class JetStreamProducer(Producer):
    """Publishes requests on the request subject and reads the results stream."""

    def __init__(self, queue: Queue):
        self.queue = queue
        self.nc: Any = None
        self.js: Any = None

    async def _open(self) -> None:
        if self.nc is None:
            self.nc = await _connect(self.queue)
            self.js = self.nc.jetstream()
            window = float(_config.get("queues.duplicate-window", 600))
            await _ensure_stream(self.js, self.queue.stream, self.queue.request_subject, window)
            await _ensure_stream(self.js, _results_stream(self.queue), self.queue.results, window)

    async def send(self, bodies: list[bytes]) -> None:
        await self._open()
        for i in range(0, len(bodies), 500):
            futures = [await self.js.publish_async(self.queue.request_subject, body) for body in bodies[i:i + 500]]
            await _acked(futures)

    async def outcomes(self, n: int, timeout: float) -> list[dict[str, Any]]:
        import time

        import nats.errors
        await self._open()
        stream = await self.js.find_stream_name_by_subject(self.queue.results)
        sub = await self.js.pull_subscribe(self.queue.results, stream=stream)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        try:
            while len(out) < n and time.monotonic() < deadline:
                try:
                    msgs = await sub.fetch(batch=min(1000, n - len(out)), timeout=max(0.1, min(1.0, deadline - time.monotonic())))
                except (nats.errors.TimeoutError, asyncio.TimeoutError):
                    continue
                for m in msgs:
                    out.append(json.loads(m.data))
                    await m.ack()
        finally:
            await sub.unsubscribe()
        return out

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()
