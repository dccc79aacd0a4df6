"""Signals sent to runs: checked, journaled (durable runs) and delivered to the scheduler.

:func:`send_signal` is ``engine.signal`` and ``cleo-dask signal``.  A signal to an unknown run,
to a run that has no signal node of that name, or to a run already finished is a
:class:`CleoError`, and nothing is recorded.  With a journal the signal is written first (table
``journal_signals`` of the journal file, value as JSON), so a run resumed later gets it again
(:func:`replay_signals`); that is also how a signal sent while no client drives the run (``--store``
only) reaches it.  Then, with a cluster, it goes to the scheduler (:mod:`cleo_dask.admission.signalsend`).
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any

from cleo_dask.errors import CleoError, StoreError
from cleo_dask.util.sqlite import connect, transient

_TABLE = """CREATE TABLE IF NOT EXISTS journal_signals (
    run_id TEXT NOT NULL, name TEXT NOT NULL, value TEXT, received REAL, PRIMARY KEY (run_id, name))"""
#: run statuses a signal can no longer reach
ENDED = ("succeeded", "failed", "cancelled")


class SignalBook:
    """The signals received by the runs of one journal file (its ``journal_signals`` table)."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._conn = connect(path)
        self._write(lambda c: c.execute(_TABLE))

    def _write(self, fn: Any) -> Any:
        with self._lock:
            for attempt in range(20):
                try:
                    with self._conn:
                        return fn(self._conn)
                except Exception as exc:  # noqa: BLE001
                    if transient(exc):
                        time.sleep(min(0.05 * (attempt + 1), 1.0))
                        continue
                    raise StoreError(f"journal {self.path}: signals cannot be recorded ({type(exc).__name__}: {exc})") from None
            raise StoreError(f"journal {self.path} stayed locked by other processes")

    def record(self, run_id: str, name: str, value: Any) -> None:
        """Keep ``value`` (JSON) as signal ``name`` of ``run_id`` (the latest value wins)."""
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise CleoError(f"signal {name!r}: a durable run's signal value must be JSON ({exc})") from None
        self._write(lambda c: c.execute("INSERT OR REPLACE INTO journal_signals VALUES (?, ?, ?, ?)",
                                        (run_id, name, text, time.time())))

    def of_run(self, run_id: str) -> dict[str, Any]:
        """The signals received by ``run_id``: name -> value."""
        with self._lock:
            rows = self._conn.execute("SELECT name, value FROM journal_signals WHERE run_id = ?", (run_id,)).fetchall()
        return {name: json.loads(value) for name, value in rows}

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


def _check_name(run_id: str, name: str, signals: Any) -> None:
    if name not in signals:
        known = ", ".join(repr(s) for s in sorted(signals)) or "none"
        raise CleoError(f"run {run_id!r} has no signal {name!r} (its signals: {known})")


def send_signal(run_id: str, name: str, value: Any = None, *, client: Any = None, run: Any = None,
                journal: Any = None) -> str:
    """Send signal ``name`` with ``value`` to run ``run_id``; returns how it went (``"delivered"``,
    ``"recorded"``: journaled for a run no client drives now, delivered when it is resumed).

    ``run``: the :class:`~cleo_dask.runs.run.Run` if this process drives it; ``journal``: a
    :class:`~cleo_dask.durable.journal.Journal` that may know the run; ``client``: a client of
    the run's cluster (without it the signal is only recorded)."""
    if not isinstance(name, str) or not name:
        raise CleoError(f"a signal name must be a non-empty string, got {name!r}")
    if run is not None:
        _check_name(run_id, name, run.workflow.signals)
        if run.done():
            raise CleoError(f"run {run_id!r} has already finished ({run.status()}): signal {name!r} not sent")
    elif journal is not None:
        record = journal.run(run_id)   # StoreError (a CleoError) for an unknown run
        if record.status in ENDED:
            raise CleoError(f"run {run_id!r} has already finished ({record.status}): signal {name!r} not sent")
        try:
            signals = getattr(journal.load_spec(run_id)["workflow"], "signals", {})
        except Exception:  # noqa: BLE001 - its tasks' modules are not importable here: checked on resume
            signals = None
        if signals is not None:
            _check_name(run_id, name, signals)
    elif client is not None:
        from cleo_dask.admission.signalsend import known_signals
        known = known_signals(client, run_id)
        if not known:
            raise CleoError(f"no run {run_id!r} waiting for signals on this cluster (unknown, or finished)")
        _check_name(run_id, name, known)
    else:
        raise CleoError("a signal needs a cluster (--address) or a journal (--store) that knows the run")
    if journal is not None:
        book = SignalBook(journal.path)
        try:
            book.record(run_id, name, value)
        finally:
            book.close()
    if client is None:
        return "recorded"
    from cleo_dask.admission.signalsend import deliver
    deliver(client, run_id, name, value)
    return "delivered"


def replay_signals(client: Any, journal_path: str, run_id: str) -> dict[str, Any]:
    """Deliver again the signals journaled for ``run_id`` (a resumed run); returns them."""
    book = SignalBook(journal_path)
    try:
        signals = book.of_run(run_id)
    finally:
        book.close()
    if signals:
        from cleo_dask.admission.signalsend import deliver
        for name, value in signals.items():
            deliver(client, run_id, name, value)
    return signals
