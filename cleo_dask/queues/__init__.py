"""Runs requested through a message queue: a source of requests and a sink for their outcomes.

``Queue(url, ...)`` names a broker's request stream and results stream (``redis://`` for Redis
Streams, ``nats://`` for NATS JetStream); ``engine.consume(queue)`` (``cleo-dask consume``) runs its
requests, ``cd.publish(queue, request)`` drops one on it.  Delivery is at least once, the effect
exactly once: the request id is the run's idempotency key in the journal.  A new broker needs a
:class:`~cleo_dask.queues.base.Source` and a :class:`~cleo_dask.queues.base.Sink` (e.g. Kafka).
"""
from cleo_dask.queues.base import Delivery, Queue, QueueError, Sink, Source
from cleo_dask.queues.publish import publish, publish_many, read_outcomes

__all__ = ["Delivery", "Queue", "QueueError", "Sink", "Source", "publish", "publish_many", "read_outcomes"]
