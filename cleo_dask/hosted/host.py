"""The run host: on the scheduler, the runs whose client has gone, carried with every policy.

``cleo-dask run --no-wait`` and ``Engine.submit(..., detach=True)`` validate a run on the client,
then send its workflow, agent and options (cloudpickled: the user's modules the cluster lacks go
by value, as :mod:`cleo_dask.core.shipping` decided) to :func:`host_submit`, which runs on the
scheduler.  There :class:`RunHost` (one per scheduler, in its ``extensions``) submits it through an
ordinary engine of its own: a ``Client`` of this scheduler, made in a thread of the scheduler
process, with its own driver thread.  So the run takes the ordinary path (slow path, delayed
retries, fallbacks, trigger rules, ``fail_fast``, and with a store its journal rows, written here),
nothing of it re-implemented.  :func:`host_report` gives a run's progress, and once it is done its
outcome (values included), to any client (:mod:`cleo_dask.hosted.attached`).

The host holds its runs strongly (no client does) and drops the oldest finished ones past
``cleo_dask.hosted.keep-finished`` (their futures released).  It lives as long as the scheduler.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import cloudpickle

from cleo_dask import config as _config
from cleo_dask.core.agent import agent_id
from cleo_dask.core.outcome import TaskResult

#: the host's name in the scheduler's ``extensions``
EXTENSION = "cleo-run-host"
#: longest a report waits on the scheduler for the run to finish (a client waiting longer asks again)
MAX_REPORT_WAIT = 5.0


class RunHost:
    """The runs submitted to one scheduler by clients that need not stay.

    ``make_engine(address, security=..., store=...)``: an engine connected to this scheduler (the
    :class:`~cleo_dask.engine.Engine` class; passed in, since this module sits below it).
    """

    def __init__(self, address: str, security: Any, make_engine: Callable[..., Any]):
        self._address = address
        self._security = security
        self._make_engine = make_engine
        self._engines: dict[str | None, Any] = {}   # by store path (None: no journal)
        self._runs: dict[str, Any] = {}             # run id -> Run, in submission order
        self._lock = threading.Lock()

    def engine(self, store: str | None) -> Any:
        """The host's engine journaling in ``store`` (started on first use; a bad store raises
        :class:`~cleo_dask.errors.StoreError`, and nothing is submitted)."""
        with self._lock:
            engine = self._engines.get(store)
            if engine is None or engine.closed:
                engine = self._make_engine(self._address, security=self._security, store=store)
                self._engines[store] = engine
            return engine

    def submit(self, blob: bytes) -> str:
        """Submit the run in ``blob`` (``(target, agent, options, store)`` cloudpickled); its id."""
        target, agent, options, store = cloudpickle.loads(blob)
        engine = self.engine(store)
        run = engine.submit(target, agent, **options)
        with self._lock:
            self._runs[run.id] = run
        # as before the host existed: the first futures stay published under the run's id
        engine.client.publish_dataset(**{f"cleo-run-{run.id}": list(run.futures.values())})
        self._trim()
        return run.id

    def report(self, run_id: str, wait: float = 0) -> bytes | None:
        """The run's state, cloudpickled (see :func:`snapshot`); ``None`` for an unknown run.
        ``wait``: seconds (at most :data:`MAX_REPORT_WAIT`) to let it finish first."""
        with self._lock:
            run = self._runs.get(run_id)
        if run is None:
            return None
        if wait > 0:
            run.wait(min(wait, MAX_REPORT_WAIT))
        return cloudpickle.dumps(snapshot(run))

    def _trim(self) -> None:
        keep = int(_config.get("hosted.keep-finished", 100))
        with self._lock:
            finished = [rid for rid, run in self._runs.items() if run.done()]
            gone = [self._runs.pop(rid) for rid in finished[:max(0, len(finished) - keep)]]
        for run in gone:
            run.release()


def snapshot(run: Any) -> dict[str, Any]:
    """What a client reads of a hosted run: its fields, status and progress, and once it is done
    its outcome as plain :class:`TaskResult` s with their values."""
    done = run.done()
    out = {"id": run.id, "name": run.name, "agent": agent_id(run.agent), "started": run.started,
           "status": run.status(), "progress": run.progress(), "ended": run.ended, "results": None}
    if done:
        outcome = run.result(fetch=True)
        out["results"] = {node: _plain(r) for node, r in outcome.items()}
        out["status"] = run.status()
        out["ended"] = run.ended
    return out


def _plain(r: TaskResult) -> TaskResult:
    """``r`` with its value fetched (a result that travels without its run)."""
    return TaskResult(r.node, r.status, value=r.value if r.ok else None, error=r.error, traceback=r.traceback,
                      attempts=r.attempts, start=r.start, end=r.end, worker=r.worker, reason=r.reason,
                      fallback_used=r.fallback_used, upstream_fallbacks=r.upstream_fallbacks,
                      worker_losses=r.worker_losses, run_id=r.run_id)


def client_security(security: Any) -> Any:
    """The scheduler's TLS settings for its own client (its certificate stands for the client's)."""
    if security is None or not getattr(security, "tls_ca_file", None) or getattr(security, "tls_client_cert", None):
        return security
    from distributed.security import Security
    return Security(tls_ca_file=security.tls_ca_file, tls_client_cert=security.tls_scheduler_cert,
                    tls_client_key=security.tls_scheduler_key, require_encryption=True)


def _host(dask_scheduler: Any, make_engine: Callable[..., Any] | None = None) -> RunHost | None:
    host = dask_scheduler.extensions.get(EXTENSION)
    if host is None and make_engine is not None:
        host = RunHost(dask_scheduler.address, client_security(getattr(dask_scheduler, "security", None)), make_engine)
        dask_scheduler.extensions[EXTENSION] = host
    return host


async def host_submit(blob: bytes, make_engine: Callable[..., Any], dask_scheduler: Any = None) -> str:
    """On the scheduler (``Client.run_on_scheduler``): submit a run to the host; its id.  The
    work happens in a thread: the host's client talks to this scheduler's event loop."""
    host = _host(dask_scheduler, make_engine)
    return await asyncio.to_thread(host.submit, blob)


async def host_report(run_id: str, wait: float = 0, dask_scheduler: Any = None) -> bytes | None:
    """On the scheduler: :meth:`RunHost.report` (``None``: no host, or no such run)."""
    host = _host(dask_scheduler)
    if host is None:
        return None
    return await asyncio.to_thread(host.report, run_id, wait)


def ping(dask_scheduler: Any = None) -> bool:
    """On the scheduler: True (cleo_dask can be imported there, so it can host runs)."""
    return True
