"""Structured logs of runs, and output of tasks on workers brought back to the client.

* The ``cleo_dask`` logger emits one record per attempt and one per node outcome.  Each record has
  a ``cleo`` attribute (a dict: ``event`` ("attempt" / "outcome"), ``run_id``, ``node``, ``agent``,
  ``attempt``, ``worker``, ``duration``, ``status``, ``error``).  Failed attempts are logged live,
  from the events the client receives; the successful attempt and the outcome of every node when
  the run finishes (outcome assembly).
* :class:`JsonFormatter` writes a record as one JSON object a line;
  ``cleo_dask.monitor.log-format: json`` (or ``text``) makes the engine install a handler with it.
* ``print()`` in a task on a worker of another process is also printed on the client (the worker
  sends Dask's own ``"print"`` event, as ``distributed.print`` does); the setting
  ``cleo_dask.monitor.forward-logging: <logger name>`` forwards that logger's records from the
  workers with ``Client.forward_logging``.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from cleo_dask import config as _config
from cleo_dask.core.outcome import SKIP_STATUSES

logger = logging.getLogger("cleo_dask")

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Format a log record as one JSON line: time, level, logger, message, then the ``cleo`` fields
    (and any other ``extra=`` fields)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": record.created, "level": record.levelname, "logger": record.name,
            "message": record.getMessage(),
        }
        cleo = getattr(record, "cleo", None)
        if isinstance(cleo, dict):
            out.update(cleo)
        for k, v in vars(record).items():
            if k not in _STANDARD and k != "cleo" and k not in out:
                out[k] = v
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(fmt: str | None = None, level: int | str = logging.INFO, stream: Any = None) -> logging.Handler:
    """Give the ``cleo_dask`` logger one stream handler (``fmt``: ``"json"`` or ``"text"``, default
    the ``cleo_dask.monitor.log-format`` setting) and return it.  Idempotent."""
    fmt = fmt or _config.get("monitor.log-format") or "text"
    if fmt not in ("json", "text"):
        from cleo_dask.errors import CleoError
        raise CleoError(f"cleo_dask.monitor.log-format must be 'json' or 'text', got {fmt!r}")
    for h in list(logger.handlers):
        if getattr(h, "_cleo", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._cleo = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler


def _emit(level: int, message: str, fields: dict[str, Any]) -> None:
    logger.log(level, message, extra={"cleo": fields})


# -- records from the client ------------------------------------------------------------------
def on_event(run: Any, msg: Any) -> None:
    """A run's event as the client receives it: log failed attempts live (called on the client's
    event loop; only builds a record when the logger is enabled)."""
    if not isinstance(msg, dict) or msg.get("kind") != "attempt" or not logger.isEnabledFor(logging.WARNING):
        return
    start, end = msg.get("start"), msg.get("end")
    duration = end - start if isinstance(start, (int, float)) and isinstance(end, (int, float)) else None
    fields = {"event": "attempt", "run_id": run.id, "node": msg.get("node"), "agent": _agent(run),
              "attempt": msg.get("attempt"), "worker": msg.get("worker"), "duration": duration,
              "status": "timed_out" if msg.get("timed_out") else "failed", "error": msg.get("error")}
    _emit(logging.WARNING, f"run {run.id} node {msg.get('node')!r} attempt {msg.get('attempt')} failed "
                           f"on {msg.get('worker')}: {msg.get('error')}", fields)


def on_run(kind: str, run: Any) -> None:
    """Engine listener: when a run finishes, one record per successful attempt and per outcome (at
    INFO); a node's final failure at ERROR, with its traceback, whatever the level."""
    if kind != "finished" or not logger.isEnabledFor(logging.ERROR):
        return
    try:
        outcome = run.result(timeout=5)
    except Exception:  # noqa: BLE001
        logger.debug("no outcome for run %s", run.id, exc_info=True)
        return
    info = logger.isEnabledFor(logging.INFO)
    agent = _agent(run)
    # below INFO only the failed nodes are logged: read from the outcome's columns, not node by node
    results = outcome.items() if info else ((r.node, r) for r in outcome.failed())
    for node, r in results:
        status = r.status.value
        if r.ok and r.attempts:
            a = r.attempts[-1]
            if a.error is None:
                _emit(logging.INFO, f"run {run.id} node {node!r} attempt {a.number} {status} on {a.worker} "
                                    f"in {_secs(a.duration)}",
                      {"event": "attempt", "run_id": run.id, "node": node, "agent": agent, "attempt": a.number,
                       "worker": a.worker, "duration": a.duration, "status": status, "error": None})
        error = repr(r.error)[:500] if r.error is not None else (r.reason if status in SKIP_STATUSES else None)
        level = logging.ERROR if status == "failed" else logging.INFO
        fields = {"event": "outcome", "run_id": run.id, "node": node, "agent": agent, "attempt": len(r.attempts),
                  "worker": r.worker, "duration": r.duration, "status": status, "error": error}
        trace = f"\n{r.traceback.rstrip()}" if status == "failed" and r.traceback else ""
        if trace:
            fields["traceback"] = r.traceback
        _emit(level, f"run {run.id} node {node!r} {status} after {len(r.attempts)} attempt(s)"
                     + (f": {error}" if error else "") + trace, fields)
    if not info:
        return
    _emit(logging.INFO, f"run {run.id} ({run.name}) {run.status()}: {outcome.counts()}",
          {"event": "run", "run_id": run.id, "node": None, "agent": agent, "attempt": None, "worker": None,
           "duration": None if run.ended is None else run.ended - run.started, "status": run.status(),
           "error": None})


def _agent(run: Any) -> str:
    from cleo_dask.core.agent import agent_id
    try:
        return agent_id(run.agent)
    except Exception:  # noqa: BLE001
        return str(run.agent)


def _secs(d: float | None) -> str:
    return "?" if d is None else f"{d:.3f}s"


# -- print() on workers ------------------------------------------------------------------------
_CLEO_KEY = re.compile(r"-[0-9a-f]{16}(-|$)")   # <task>-<run id>-<node>[-<generation>]


# -- Dask's error log of failed attempts ------------------------------------------------------------
class QuietNodeFailures(logging.Filter):
    """Drops the worker's ``Compute Failed`` error (with traceback) of a cleo node's failed attempt:
    the client logs each failed attempt in one line and a final failure once, with its traceback.
    Any other failure (other keys, an error in cleo itself) keeps Dask's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (isinstance(record.msg, str) and record.msg.startswith("Compute Failed")
                    and isinstance(args, tuple) and len(args) >= 4 and isinstance(args[0], str)
                    and _CLEO_KEY.search(args[0]) is not None
                    and isinstance(args[3], str) and args[3].startswith("NodeFailed("))


class QuietWorkerErrors(WorkerPlugin):
    """Worker plugin: install :class:`QuietNodeFailures` on the ``distributed.worker`` logger."""

    idempotent = True
    name = "cleo-quiet-worker-errors"

    def setup(self, worker: Any) -> None:
        install_quiet_filter()


def install_quiet_filter() -> None:
    """Add :class:`QuietNodeFailures` to the ``distributed.worker`` logger of this process (once)."""
    log = logging.getLogger("distributed.worker")
    if not any(isinstance(f, QuietNodeFailures) for f in log.filters):
        log.addFilter(QuietNodeFailures())


def quiet_worker_errors(client: Any) -> None:
    """Called by the engine: keep Dask's worker error log quiet about cleo's failed attempts
    (``cleo_dask.monitor.quiet-worker-errors: false`` keeps it)."""
    if not _config.get("monitor.quiet-worker-errors", True):
        return
    try:
        client.register_plugin(QuietWorkerErrors(), name=QuietWorkerErrors.name)
    except Exception:  # noqa: BLE001 - logging must never stop an engine from starting
        logger.debug("could not quiet the workers' error log", exc_info=True)


class _TaskStdout:
    """Stands in for ``sys.stdout`` on a worker: writes go through unchanged, and complete lines
    written by a cleo task's thread are also sent to the clients as Dask ``"print"`` events."""

    def __init__(self, wrapped: Any, worker: Any):
        self._wrapped = wrapped
        self._worker = worker
        self._local = threading.local()

    def _in_task(self) -> bool:
        from distributed.worker import thread_state
        key = getattr(thread_state, "key", None)
        if isinstance(key, str) and _CLEO_KEY.search(key):
            return True
        return threading.current_thread().name.startswith("cleo-task-")

    def write(self, s: str) -> int:
        n = self._wrapped.write(s)
        if s and self._in_task():
            buf = getattr(self._local, "buf", "") + s
            *lines, rest = buf.split("\n")
            self._local.buf = rest
            for line in lines:
                try:
                    self._worker.log_event("print", {"args": (line,), "sep": " ", "end": "\n", "flush": False})
                except Exception:  # noqa: BLE001 - output must never break a task
                    pass
        return n

    def flush(self) -> None:
        self._wrapped.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


class PrintForwarder(WorkerPlugin):
    """Worker plugin: forward ``print()`` output of cleo tasks to the clients (not on workers in
    the client's own process, where it is printed already)."""

    idempotent = True
    name = "cleo-print-forwarder"

    def __init__(self, client_pid: int):
        self.client_pid = client_pid
        self._installed: _TaskStdout | None = None

    def setup(self, worker: Any) -> None:
        if os.getpid() == self.client_pid or isinstance(sys.stdout, _TaskStdout):
            return
        self._installed = _TaskStdout(sys.stdout, worker)
        sys.stdout = self._installed  # type: ignore[assignment]

    def teardown(self, worker: Any) -> None:
        if self._installed is not None and sys.stdout is self._installed:
            sys.stdout = self._installed._wrapped


def setup_client(client: Any) -> None:
    """Called by the engine: forward prints and (if configured) a logger from the workers."""
    try:
        if _config.get("monitor.forward-prints", True):
            client.register_plugin(PrintForwarder(os.getpid()), name=PrintForwarder.name)
        name = _config.get("monitor.forward-logging")
        if name is not None and not _same_process(client):
            client.forward_logging(name or None)
    except Exception:  # noqa: BLE001 - monitoring must never stop an engine from starting
        logger.warning("could not set up output forwarding from the workers", exc_info=True)
    fmt = _config.get("monitor.log-format")
    if fmt:
        configure_logging(fmt)


def _same_process(client: Any) -> bool:
    pid = os.getpid()
    try:
        return all(p == pid for p in client.run(os.getpid).values())
    except Exception:  # noqa: BLE001
        return False
