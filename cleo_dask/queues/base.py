"""The broker-neutral interface: a :class:`Source` yields :class:`Delivery` s (a request's bytes
with its ack), a :class:`Sink` publishes outcomes idempotently; :class:`Queue` names both.

A Kafka implementation (aiokafka) can follow on this same interface: ``fetch`` a batch within the
free in-flight slots, ``claim`` what a dead consumer left (a consumer-group rebalance), ``ack``
by committing, ``Sink.publish`` keyed by the request id (an idempotent producer).
"""
from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cleo_dask.errors import CleoError


class QueueError(CleoError):
    """A bad queue URL or option, or a broker that cannot be reached."""


@dataclass(frozen=True)
class Queue:
    """A broker's request stream and results stream, as ``cleo-dask consume`` names them.

    ``url``: ``redis://host:6379/0`` (Redis Streams) or ``nats://host:4222`` (NATS JetStream).
    ``stream``: the Redis stream of requests, or the JetStream stream holding ``subject``.
    ``group``: the consumer group (a JetStream durable consumer).  ``results``: where outcomes go
    (a Redis stream, a NATS subject).  ``claim_after``: seconds after which a request an engine
    took but did not acknowledge goes to another (Redis ``XAUTOCLAIM``, JetStream ack wait).
    """

    url: str
    stream: str = "cleo:requests"
    results: str = "cleo:results"
    group: str = "engines"
    subject: str | None = None
    claim_after: float = 60.0

    def __post_init__(self) -> None:
        if self.kind not in ("redis", "nats"):
            raise QueueError(f"queue URL {self.url!r}: use redis://host:port/db or nats://host:port")
        for name in ("stream", "results", "group"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise QueueError(f"queue {name} must be a non-empty string, got {getattr(self, name)!r}")
        if not (isinstance(self.claim_after, (int, float)) and self.claim_after > 0):
            raise QueueError(f"claim_after must be positive seconds, got {self.claim_after!r}")

    @property
    def kind(self) -> str:
        """``redis`` or ``nats`` (from the URL's scheme)."""
        scheme = self.url.split("://", 1)[0].lower() if "://" in self.url else ""
        return {"redis": "redis", "rediss": "redis", "nats": "nats", "tls": "nats"}.get(scheme, scheme)

    @property
    def request_subject(self) -> str:
        """The NATS subject of requests (default: the stream name, lower-cased, ``.requests``)."""
        return self.subject or f"{self.stream.lower()}.requests"


@dataclass
class Delivery:
    """One request as the broker delivered it: ``body`` (bytes), the broker's ``message_id`` and
    how to ``ack`` it (a coroutine function); ``redelivered``: the broker says it was delivered before."""

    body: bytes
    message_id: str
    ack: Callable[[], Awaitable[None]]
    redelivered: bool = False
    raw: Any = None       # the broker's own message object


class Source(abc.ABC):
    """Requests of one consumer group, fetched within the consumer's free in-flight slots."""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Connect, creating the stream and the group if they do not exist yet."""

    @abc.abstractmethod
    async def fetch(self, n: int, timeout: float) -> list[Delivery]:
        """Up to ``n`` new requests, waiting at most ``timeout`` seconds for the first."""

    async def claim(self, n: int) -> list[Delivery]:
        """Up to ``n`` requests other consumers took but did not ack for ``claim_after`` (none by
        default: brokers with an ack wait deliver them again through :meth:`fetch`)."""
        return []

    async def touch(self, deliveries: list[Delivery]) -> None:
        """Tell the broker these requests are still being worked on (their runs are in flight), so
        that only a dead consumer's requests go to another after ``claim_after``."""

    async def ack(self, deliveries: list[Delivery]) -> None:
        """Acknowledge ``deliveries`` (one by one unless the broker can do many at once); one whose
        ack fails is delivered again later, and answered from the journal then."""
        for d in deliveries:
            try:
                await d.ack()
            except Exception:  # noqa: BLE001
                pass

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection (unacknowledged requests stay with the broker)."""


class Sink(abc.ABC):
    """Where outcomes go: ``publish`` is idempotent per ``key`` (the request id), so an outcome
    published again after a crash is not a second message."""

    @abc.abstractmethod
    async def publish(self, outcomes: list[tuple[str, dict[str, Any]]]) -> None:
        """Publish ``(key, message)`` pairs (JSON-able messages), each at most once per key."""


class Producer(abc.ABC):
    """A producer's side of a queue: publish requests, read outcomes."""

    @abc.abstractmethod
    async def send(self, bodies: list[bytes]) -> None:
        """Append requests (JSON bytes) to the request stream."""

    @abc.abstractmethod
    async def outcomes(self, n: int, timeout: float) -> list[dict[str, Any]]:
        """The results stream's messages from the start, up to ``n``, within ``timeout`` seconds."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection."""
