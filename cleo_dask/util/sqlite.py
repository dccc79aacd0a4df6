"""One way to open cleo_dask's SQLite files: WAL, a busy timeout, foreign keys on.

Both the schedule store and the run journal use it, so several processes (a ``cleo-dask serve``,
notebooks, batch scripts) can share one file without "database is locked" failures.
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

BUSY_TIMEOUT_S = 30.0
#: SQLite errors that say another connection holds the file for a moment (switching a new file to
#: WAL needs it alone, and SQLite does not always call the busy handler then): try again
TRANSIENT = ("locked", "busy", "locking protocol")


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a momentary lock held by another connection (worth trying again)."""
    return isinstance(exc, sqlite3.OperationalError) and any(word in str(exc) for word in TRANSIENT)


def connect(path: str | Path, *, check_same_thread: bool = False) -> sqlite3.Connection:
    """Open (creating if needed) the SQLite file at ``path`` in WAL mode, autocommit off."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=check_same_thread,
                           isolation_level=None)
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    for attempt in range(1_000_000):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if not transient(exc) or time.monotonic() > deadline:
                conn.close()
                raise
            time.sleep(min(0.01 * (attempt + 1), 0.2))
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn
