"""Forgetting a finished run's event topic, on the client and on the scheduler.

Each run has an event topic (:func:`~cleo_dask.core.events.run_topic`) the client subscribes to.
Two things outlive the run there unless cleo_dask removes them:

* ``Client.unsubscribe_topic`` (distributed 2026.8) tells the scheduler but keeps
  ``client._event_handlers[topic]``: the handler is the run's bound method, so the run, its
  futures and, through them, its results on the workers and its tasks on the scheduler stay.
* The scheduler's event broker keeps a topic (its recent events, count and subscribers) for
  every name ever used.

So once a run has ended (its ``finished`` event sent), :func:`retire` drops its topics on the
scheduler (one call for every run that ended meanwhile) and the scheduler answers on the
client's own stream, behind every event it sent for those topics, with a :data:`RETIRED`
event; the client then removes their handlers: no event of a run reaches a client that no
longer knows its topic.  When cleo_dask cannot run on the scheduler, the client unsubscribes
the Dask way and removes the handlers a few seconds later (the scheduler then keeps the
topics).
"""
from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger("cleo_dask")

RETIRED = "cleo-retired"   # the scheduler's answer: {"topics": [...]} no longer sent to this client
LATE_SECONDS = 5.0         # without cleo_dask on the scheduler: handlers removed this long after


def _ignore(item: Any) -> None:
    """The handler of a topic about to be retired (holds nothing)."""


def mute(client: Any, topics: Sequence[str]) -> None:
    """Stop handling ``topics``' events on ``client`` (until they are retired) without failing on late ones."""
    handlers = getattr(client, "_event_handlers", None)
    if handlers is not None:
        for topic in topics:
            if topic in handlers:
                handlers[topic] = _ignore


def _remover(client: Any) -> _Remover | None:
    """The client's handler of :data:`RETIRED` events, installed on first use."""
    handlers = getattr(client, "_event_handlers", None)
    if handlers is None:
        return None
    remover = handlers.get(RETIRED)
    if not isinstance(remover, _Remover):
        remover = handlers[RETIRED] = _Remover(client)
    return remover


class _Remover:
    """The client's handler of :data:`RETIRED` events: remove the handlers of those topics (only
    those set when they were retired: a resumed run may subscribe to its topic again)."""

    def __init__(self, client: Any):
        self._client = weakref.ref(client)
        self.pending: dict[str, Any] = {}   # topic -> its handler when retired (on the client's loop only)

    def expect(self, topics: Sequence[str]) -> None:
        client = self._client()
        handlers = getattr(client, "_event_handlers", {})
        for topic in topics:
            self.pending[topic] = handlers.get(topic)

    def remove(self, topics: Sequence[str]) -> None:
        client = self._client()
        handlers = getattr(client, "_event_handlers", None)
        for topic in topics:
            handler = self.pending.pop(topic, None)
            if handlers is not None and topic in handlers and handlers[topic] is handler:
                del handlers[topic]

    def __call__(self, item: tuple[float, Any]) -> None:
        msg = item[1] if isinstance(item, tuple) and len(item) == 2 else None
        if isinstance(msg, dict):
            self.remove(msg.get("topics") or ())


async def retire(client: Any, topics: list[str]) -> None:
    """On the client's loop: forget ``topics`` on the scheduler, then (on its answer) on the client."""
    remover = _remover(client)
    if not topics or remover is None:
        return
    remover.expect(topics)
    try:
        await client._run_on_scheduler(_drop_topics, topics, client.id)
        return
    except Exception:  # noqa: BLE001 - typically cleo_dask not importable on the scheduler
        logger.debug("could not drop event topics on the scheduler", exc_info=True)
    for topic in topics:  # the Dask way: the scheduler keeps the topics, the client forgets them
        try:
            client._send_to_scheduler({"op": "unsubscribe-topic", "topic": topic, "client": client.id})
        except Exception:  # noqa: BLE001 - the client is closing
            break
    client.loop.call_later(LATE_SECONDS, remover.remove, list(topics))


def _drop_topics(topics: list[str], client_id: str, dask_scheduler: Any = None) -> int:
    """On the scheduler: forget ``topics`` (events, counts, subscribers), then tell the client."""
    broker = getattr(dask_scheduler, "_broker", None)
    kept = getattr(broker, "_topics", None)
    for topic in topics:
        if kept is not None:
            kept.pop(topic, None)
        else:  # another distributed: at least stop sending them
            dask_scheduler.unsubscribe_topic(topic, client_id)
    from cleo_dask.monitor.spans import prune
    prune(dask_scheduler)  # Dask keeps a span per computation: the runs' old ones go too
    comm = dask_scheduler.client_comms.get(client_id)
    if comm is not None:  # behind every event already sent to this client on its stream
        comm.send({"op": "event", "topic": RETIRED, "event": (time.time(), {"topics": list(topics)})})
    return len(topics)


def topic_count(dask_scheduler: Any = None) -> int:
    """On the scheduler: how many event topics it keeps (tests, benchmarks)."""
    broker = getattr(dask_scheduler, "_broker", None)
    return len(getattr(broker, "_topics", ()))
