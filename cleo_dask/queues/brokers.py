"""The implementation of a queue's URL scheme: Redis Streams (``redis://``) or NATS JetStream
(``nats://``); a Kafka one would be one more branch here."""
from __future__ import annotations

from typing import Any

from cleo_dask.queues.base import Producer, Queue, Sink, Source


def open_broker(queue: Queue, consumer: str) -> tuple[Source, Sink]:
    """A source and sink for consumer ``consumer`` (a name unique in the group); connect the source."""
    broker: Any
    if queue.kind == "redis":
        from cleo_dask.queues.redisstreams import RedisBroker
        broker = RedisBroker(queue, consumer)
    else:
        from cleo_dask.queues.jetstream import JetStreamBroker
        broker = JetStreamBroker(queue, consumer)
    return broker, broker


def open_producer(queue: Queue) -> Producer:
    """A connection that publishes requests and reads outcomes (:func:`cleo_dask.publish`)."""
    if queue.kind == "redis":
        from cleo_dask.queues.redisstreams import RedisProducer
        return RedisProducer(queue)
    from cleo_dask.queues.jetstream import JetStreamProducer
    return JetStreamProducer(queue)
