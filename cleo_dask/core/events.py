"""The events cleo_dask publishes on the Dask scheduler's event log.

Each run has its own topic, :func:`run_topic` (``"cleo-run-<run id>"``); every cleo topic starts
with :data:`TOPIC` (``"cleo"``).  Clients (the engine) and workers (the task wrapper) send events
with ``log_event(topic, msg)``; the scheduler keeps them (``Client.get_events(topic)``), forwards
them to subscribed clients
(``Client.subscribe_topic``) and hands them to scheduler plugins (``SchedulerPlugin.log_event``).
Monitoring, logs and metrics are all built from these messages plus the scheduler's own task
transitions for the keys a ``run`` event announces.  Every message is a plain dict (msgpack-able:
str, int, float, bool, None, list, dict) with at least ``kind`` and ``run``.

Kinds (fields beyond ``kind`` and ``run``):

``run``            client, at submit: ``agent``, ``name``, ``started`` (epoch s), ``nodes``
                   ({node: dask key}), ``edges`` ([[parent, child], ...]).
``keys``           client, when nodes are resubmitted under new keys: ``nodes`` ({node: key}).
``attempt``        worker, once per *failed* attempt: ``node``, ``key``, ``attempt``, ``worker``,
                   ``start``, ``end``, ``error`` (repr), ``error_type``, ``timed_out`` (bool).
``skipped``        worker (or client, below a failure), for a node that did not run: ``node``, ``key``,
                   ``reason``, ``status`` (``skipped`` or ``upstream_failed``).
``retry``          client, a retry was scheduled: ``node``, ``attempt`` (the next one), ``delay``.
``fallback``       client, a fallback was submitted for a finally failed node: ``node``, ``key``.
``outcome``        client, a node's final outcome known on the client's slow path (failed,
                   fell_back, cancelled): ``node``, ``status``, ``error``.
``finished``       client, the run ended: ``status``, ``counts`` ({status: n}), ``ended``.
``cache``          worker, durable runs only, a ``cache=`` task: ``node``, ``hit`` (bool), ``cache_key``.
``unstorable``     worker, durable runs only, a node's output could not be stored (not resumable):
                   ``node``, ``key``, ``error``.

Successful nodes send nothing: their success is the scheduler's ``memory`` transition of their key,
which keeps the fast path free of extra messages.
"""
from __future__ import annotations

import time
from typing import Any

TOPIC = "cleo"


def run_topic(run_id: str) -> str:
    """The event topic of one run."""
    return f"{TOPIC}-run-{run_id}"


def event(kind: str, run: str, **fields: Any) -> dict[str, Any]:
    """Build one event message of ``kind`` for ``run``; ``time`` (epoch seconds) is added."""
    msg: dict[str, Any] = {"kind": kind, "run": run, "time": time.time()}
    msg.update(fields)
    return msg


def send_from_worker(msg: dict[str, Any]) -> None:
    """Send ``msg`` to its run's topic from the worker running this task (nothing outside a worker)."""
    try:
        from distributed import get_worker
        get_worker().log_event(run_topic(msg["run"]), msg)
    except Exception:  # noqa: BLE001 - no worker (direct call): nothing to report to
        pass
