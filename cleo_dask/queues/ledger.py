"""Which requests' outcomes were published: a table beside the journal, in the same SQLite file.

The broker's own dedup (a Redis marker key, JetStream's ``Nats-Msg-Id``) covers a crash between
publishing and recording it here; this record covers the time after the broker forgot.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable

from cleo_dask.errors import StoreError
from cleo_dask.util.sqlite import connect

_SCHEMA = ("CREATE TABLE IF NOT EXISTS queue_outcomes (request_id TEXT PRIMARY KEY, run_id TEXT, "
           "status TEXT, published REAL)")


class Ledger:
    """The ``queue_outcomes`` table of the journal file at ``path``."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        try:
            self._conn = connect(self.path)
            self._conn.execute(_SCHEMA)
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"journal {self.path}: cannot keep the queue's outcomes ({exc})") from None

    def published(self, request_ids: Iterable[str]) -> set[str]:
        """Those of ``request_ids`` whose outcome was published."""
        ids = list(request_ids)
        found: set[str] = set()
        with self._lock:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                rows = self._conn.execute("SELECT request_id FROM queue_outcomes WHERE request_id IN "
                                          f"({', '.join('?' * len(chunk))})", chunk).fetchall()
                found.update(r[0] for r in rows)
        return found

    def mark(self, rows: Iterable[tuple[str, str | None, str]]) -> None:
        """Record ``(request_id, run_id, status)`` as published, in one transaction."""
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany("INSERT OR IGNORE INTO queue_outcomes VALUES (?, ?, ?, ?)",
                                       [(rid, run, status, now) for rid, run, status in rows])
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def count(self) -> int:
        """How many outcomes were published."""
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM queue_outcomes").fetchone()[0]

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
