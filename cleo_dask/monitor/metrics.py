"""cleo_dask's Prometheus metrics, served by the scheduler's own ``/metrics`` endpoint.

Distributed serves ``prometheus_client.REGISTRY`` (the process-wide default registry) at
``/metrics`` on the dashboard port, so metrics created here show up there once this module is
imported in the scheduler process (the monitor plugin does that).  All names start with ``cleo_``.

The schedules feature reports how late a scheduled run started with
:func:`observe_schedule_lateness` (in the scheduler process), or from anywhere with an event
``{"kind": "lateness", "seconds": s}`` on a topic starting with ``"cleo"``.
"""
from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_metrics: dict[str, Any] = {}

# Buckets (seconds) for LLM-ish agent tasks: from tens of milliseconds to ten minutes.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, float("inf"))
LATENESS_BUCKETS = (0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, float("inf"))


def metrics() -> dict[str, Any]:
    """The metric objects (created and registered with ``prometheus_client.REGISTRY`` once per process)."""
    with _lock:
        if not _metrics:
            from prometheus_client import Counter, Histogram
            _metrics.update(
                tasks=Counter("cleo_tasks", "Workflow nodes that reached a final state, by status", ["status"]),
                runs=Counter("cleo_runs", "Runs that finished, by status", ["status"]),
                attempts=Counter("cleo_attempts", "Task attempts that ended, by outcome", ["outcome"]),
                retries=Counter("cleo_retries", "Retries scheduled by cleo_dask (after a failed attempt)"),
                fallbacks=Counter("cleo_fallbacks", "Fallbacks submitted for finally failed nodes"),
                timeouts=Counter("cleo_timeouts", "Attempts that hit their time limit"),
                attempt_duration=Histogram("cleo_attempt_duration_seconds", "Duration of task attempts",
                                           ["outcome"], buckets=DURATION_BUCKETS),
                lateness=Histogram("cleo_schedule_lateness_seconds",
                                   "How late scheduled runs started after their due time", buckets=LATENESS_BUCKETS),
            )
        return _metrics


def observe_schedule_lateness(seconds: float) -> None:
    """Record that a scheduled run started ``seconds`` after it was due."""
    metrics()["lateness"].observe(max(0.0, float(seconds)))


def observe_attempt(outcome: str, duration: float | None, timed_out: bool = False) -> None:
    """Record one ended attempt (``outcome``: ``"succeeded"`` or ``"failed"``)."""
    count, hist = _attempt_children.get(outcome) or _attempt_metrics(outcome)
    count.inc()
    if duration is not None and duration >= 0:
        hist.observe(duration)
    if timed_out:
        metrics()["timeouts"].inc()


# the labelled children, looked up once: the monitor records an attempt per finished task
_attempt_children: dict[str, tuple[Any, Any]] = {}


def _attempt_metrics(outcome: str) -> tuple[Any, Any]:
    m = metrics()
    pair = (m["attempts"].labels(outcome=outcome), m["attempt_duration"].labels(outcome=outcome))
    _attempt_children[outcome] = pair
    return pair


def observe_node(status: str, count: int = 1) -> None:
    """Record ``count`` nodes' final status."""
    metrics()["tasks"].labels(status=status).inc(count)


def observe_run(status: str) -> None:
    """Record a finished run."""
    metrics()["runs"].labels(status=status).inc()


def observe_retry() -> None:
    """Record a retry scheduled by the client."""
    metrics()["retries"].inc()


def observe_fallback() -> None:
    """Record a fallback submitted by the client."""
    metrics()["fallbacks"].inc()


def report_schedule_lateness(client: Any, seconds: float) -> None:
    """From a client process: send the lateness of a scheduled run to the scheduler's metrics
    (an event ``{"kind": "lateness"}`` the monitor plugin observes)."""
    try:
        client.log_event("cleo-schedules", {"kind": "lateness", "run": None, "seconds": float(seconds)})
    except Exception:  # noqa: BLE001 - metrics must never break scheduling
        pass
