"""What a producer calls: :func:`publish` a request (``cd.publish``), :func:`read_outcomes` back.

A request is a mapping (``id`` added when missing) or raw JSON bytes/str sent as they are.
"""
from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any

from cleo_dask.queues.base import Queue, QueueError
from cleo_dask.queues.brokers import open_producer


def as_queue(queue: Queue | str, **options: Any) -> Queue:
    """``queue`` as a :class:`Queue` (a URL with ``options``: ``stream``, ``results``, ``subject`` ...)."""
    if isinstance(queue, Queue):
        return queue
    if isinstance(queue, str):
        return Queue(queue, **options)
    raise QueueError(f"queue must be a cleo_dask.queues.Queue or a URL, got {queue!r}")


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to its end from synchronous code (in a thread if this one runs a loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc
    t = threading.Thread(target=target, name="cleo-dask-publish")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _body(request: Mapping[str, Any] | bytes | str) -> tuple[str | None, bytes]:
    if isinstance(request, bytes):
        return None, request
    if isinstance(request, str):
        return None, request.encode()
    if not isinstance(request, Mapping):
        raise QueueError(f"a request is a mapping (id, target, agent, inputs, priority) or JSON, got {request!r}")
    data = dict(request)
    data.setdefault("id", uuid.uuid4().hex)
    try:
        return data["id"], json.dumps(data).encode()
    except (TypeError, ValueError) as exc:
        raise QueueError(f"request {data['id']!r} does not serialise as JSON: {exc}") from None


async def _send(queue: Queue, bodies: list[bytes]) -> None:
    producer = open_producer(queue)
    try:
        await producer.send(bodies)
    finally:
        await producer.close()


def publish_many(queue: Queue | str, requests: Iterable[Mapping[str, Any] | bytes | str], **options: Any) -> list[str | None]:
    """Append ``requests`` to the queue's request stream; their ids (``None`` for raw JSON)."""
    q = as_queue(queue, **options)
    pairs = [_body(r) for r in requests]
    run_sync(_send(q, [body for _, body in pairs]))
    return [rid for rid, _ in pairs]


def publish(queue: Queue | str, request: Mapping[str, Any] | bytes | str, **options: Any) -> str | None:
    """Append one request to the queue's request stream (``cd.publish``); its id."""
    return publish_many(queue, [request], **options)[0]


async def _read(queue: Queue, n: int, timeout: float) -> list[dict[str, Any]]:
    producer = open_producer(queue)
    try:
        return await producer.outcomes(n, timeout)
    finally:
        await producer.close()


def read_outcomes(queue: Queue | str, n: int, timeout: float = 30, **options: Any) -> list[dict[str, Any]]:
    """The results stream's outcome messages from its start: up to ``n``, within ``timeout`` seconds."""
    return run_sync(_read(as_queue(queue, **options), n, timeout))
