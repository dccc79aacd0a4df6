"""One way to open cleo_dask's SQLite files: WAL, a busy timeout, foreign keys on.

Both the schedule store and the run journal use it, so several processes (a ``cleo-dask serve``,
notebooks, batch scripts) can share one file without "database is locked" failures.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

BUSY_TIMEOUT_S = 30.0


def connect(path: str | Path, *, check_same_thread: bool = False) -> sqlite3.Connection:
    """Open (creating if needed) the SQLite file at ``path`` in WAL mode, autocommit off."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=check_same_thread,
                           isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn
