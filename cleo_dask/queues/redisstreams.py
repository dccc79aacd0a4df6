"""Redis Streams: requests read with ``XREADGROUP`` in a consumer group, taken over from a dead
consumer with ``XAUTOCLAIM``, acknowledged with ``XACK``; outcomes appended with ``XADD`` by a
script that first sets a marker key per request (``SET NX``), so an outcome is one message.
"""
from __future__ import annotations

import json
from typing import Any

from cleo_dask import config as _config
from cleo_dask.queues.base import Delivery, Producer, Queue, QueueError, Sink, Source

#: XADD only if this request's marker key is new (atomic, in one script).
_PUBLISH_ONCE = """
for i = 1, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('XADD', ARGV[2], '*', 'outcome', ARGV[i + 2])
  end
end
return #KEYS
"""


def _client(queue: Queue) -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError:  # pragma: no cover - a dependency
        raise QueueError("the redis package is needed for redis:// queues: pip install redis") from None
    return aioredis.Redis.from_url(queue.url, socket_connect_timeout=5, health_check_interval=10)


class RedisBroker(Source, Sink):
    """One consumer of ``queue.group`` on ``queue.stream``; outcomes to ``queue.results``."""

    def __init__(self, queue: Queue, consumer: str):
        self.queue = queue
        self.consumer = consumer
        self.redis = _client(queue)
        self._claim_cursor = "0-0"
        self._script: Any = None
        self.marker_ttl = int(float(_config.get("queues.marker-ttl", 7 * 86400)))

    async def connect(self) -> None:
        import redis
        try:
            await self.redis.xgroup_create(self.queue.stream, self.queue.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._script = self.redis.register_script(_PUBLISH_ONCE)

    def _delivery(self, msg_id: Any, fields: dict, redelivered: bool = False) -> Delivery:
        mid = msg_id.decode() if isinstance(msg_id, bytes) else str(msg_id)
        body = fields.get(b"request", fields.get("request", b""))

        async def ack() -> None:
            await self.redis.xack(self.queue.stream, self.queue.group, mid)
        return Delivery(body if isinstance(body, bytes) else str(body).encode(), mid, ack, redelivered)

    async def fetch(self, n: int, timeout: float) -> list[Delivery]:
        reply = await self.redis.xreadgroup(self.queue.group, self.consumer, {self.queue.stream: ">"}, count=n,
                                            block=max(1, int(timeout * 1000)))
        return [self._delivery(mid, fields) for _, msgs in reply or [] for mid, fields in msgs if fields]

    async def claim(self, n: int) -> list[Delivery]:
        reply = await self.redis.xautoclaim(self.queue.stream, self.queue.group, self.consumer,
                                            min_idle_time=int(self.queue.claim_after * 1000),
                                            start_id=self._claim_cursor, count=n)
        cursor, msgs = reply[0], reply[1]
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        out = []
        for mid, fields in msgs:
            if fields:
                out.append(self._delivery(mid, fields, redelivered=True))
            else:  # trimmed from the stream: nothing to run, nothing to answer
                await self.redis.xack(self.queue.stream, self.queue.group, mid)
        return out

    async def touch(self, deliveries: list[Delivery]) -> None:
        ids = [d.message_id for d in deliveries]
        for i in range(0, len(ids), 1000):   # XCLAIM to itself resets their idle time
            await self.redis.xclaim(self.queue.stream, self.queue.group, self.consumer, 0, ids[i:i + 1000],
                                    justid=True)

    async def ack(self, deliveries: list[Delivery]) -> None:
        for i in range(0, len(deliveries), 1000):
            await self.redis.xack(self.queue.stream, self.queue.group, *[d.message_id for d in deliveries[i:i + 1000]])

    async def publish(self, outcomes: list[tuple[str, dict[str, Any]]]) -> None:
        for i in range(0, len(outcomes), 200):
            chunk = outcomes[i:i + 200]
            keys = [f"{self.queue.results}:sent:{key}" for key, _ in chunk]
            await self._script(keys=keys, args=[self.marker_ttl, self.queue.results,
                                                *[json.dumps(m) for _, m in chunk]])

    async def close(self) -> None:
        await self.redis.aclose()


class RedisProducer(Producer):
    """Publishes requests to ``queue.stream`` and reads ``queue.results``."""

    def __init__(self, queue: Queue):
        self.queue = queue
        self.redis = _client(queue)

    async def send(self, bodies: list[bytes]) -> None:
        for i in range(0, len(bodies), 1000):
            async with self.redis.pipeline(transaction=False) as pipe:
                for body in bodies[i:i + 1000]:
                    pipe.xadd(self.queue.stream, {"request": body})
                await pipe.execute()

    async def outcomes(self, n: int, timeout: float) -> list[dict[str, Any]]:
        import time
        out: list[dict[str, Any]] = []
        last = "0-0"
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            reply = await self.redis.xread({self.queue.results: last}, count=1000, block=max(1, int(min(left, 1) * 1000)))
            for _, msgs in reply or []:
                for mid, fields in msgs:
                    last = mid
                    out.append(json.loads(fields[b"outcome"]))
        return out

    async def close(self) -> None:
        await self.redis.aclose()
