"""Where schedules live: a SQLite database (a file, or in memory), tables prefixed ``schedule_``.

* ``schedule_schedules``: one row per schedule (target, agent, inputs, trigger state, next fire
  time, state, policy) with a ``version`` bumped on every change, so updates are compare-and-set.
* ``schedule_firings``: one row per decision about a due time: ``fired`` (with ``handoff``, the
  time the run was submitted, and its ``run_id``), ``missed`` or ``skipped`` (with a ``reason``;
  consecutive ones share a row with a ``count``).  ``UNIQUE(schedule_id, due)``: a due time can
  never be fired twice, whatever the processes do.
* ``schedule_lease``: which process fires the schedules of this file.  Only the lease holder
  commits firings (checked inside the same transaction), so two ``serve`` processes on one
  store cannot both fire; a lease whose holder died (same host, process gone) or expired is taken over.

Files are opened with :func:`cleo_dask.util.sqlite.connect` (WAL), so the run journal can share them.
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from cleo_dask.errors import StoreError
from cleo_dask.schedules.records import ACTIVE, CANCELLED, PAUSED, Firing, Outcome, ScheduleRecord, ScheduleState, Update
from cleo_dask.util.sqlite import connect

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedule_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS schedule_schedules (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    target TEXT NOT NULL,
    agent BLOB,
    agent_format TEXT,
    trigger TEXT NOT NULL,
    next_fire REAL,
    state TEXT NOT NULL,
    misfire_grace REAL,
    coalesce INTEGER NOT NULL,
    max_running INTEGER,
    timezone TEXT NOT NULL,
    created REAL NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    inputs TEXT
);
CREATE TABLE IF NOT EXISTS schedule_firings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule_id TEXT NOT NULL REFERENCES schedule_schedules(id),
    due REAL NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    count INTEGER NOT NULL DEFAULT 1,
    last_due REAL,
    decided REAL NOT NULL,
    handoff REAL,
    run_id TEXT,
    owner TEXT,
    UNIQUE (schedule_id, due)
);
CREATE INDEX IF NOT EXISTS schedule_firings_by_schedule ON schedule_firings (schedule_id, id);
CREATE TABLE IF NOT EXISTS schedule_lease (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    acquired REAL NOT NULL,
    expires REAL NOT NULL
);
"""

class ScheduleStore:
    """A schedule store on SQLite: ``path`` a file, or ``None`` for an in-memory database.

    Thread-safe (one connection behind a lock).  ``owner`` identifies this process's scheduler
    for the lease.
    """

    LEASE = "scheduler"

    def __init__(self, path: str | os.PathLike[str] | None = None, *, owner: str | None = None):
        self.path = None if path is None else os.fspath(path)
        self.persistent = self.path is not None
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._lock = threading.RLock()
        try:
            self._db = connect(self.path if self.path is not None else ":memory:")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self._db.execute(stmt)
            row = self._db.execute("SELECT value FROM schedule_meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT OR IGNORE INTO schedule_meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schedule tables have schema {row[0]}, this cleo_dask reads up to "
                                 f"{SCHEMA_VERSION}: upgrade cleo_dask")
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(schedule_schedules)")}
            if "inputs" not in columns:  # a store written before schedules had inputs: add the column
                try:
                    self._db.execute("ALTER TABLE schedule_schedules ADD COLUMN inputs TEXT")
                except sqlite3.OperationalError as exc:  # another process added it meanwhile
                    if "duplicate column" not in str(exc):
                        raise
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot use {self.path or 'the in-memory store'} as a schedule store: {exc}") from exc

    # -- transactions ----------------------------------------------------------------------------
    class _Tx:
        def __init__(self, store: ScheduleStore):
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            try:
                self.store._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.store._lock.release()
                raise
            return self.store._db

        def __exit__(self, exc_type: Any, *rest: Any) -> None:
            try:
                self.store._db.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.store._lock.release()

    def _tx(self) -> ScheduleStore._Tx:
        return ScheduleStore._Tx(self)

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- schedules -------------------------------------------------------------------------------
    def add(self, rec: ScheduleRecord) -> None:
        """Insert a new schedule."""
        with self._tx() as db:
            db.execute("INSERT INTO schedule_schedules (id, name, target, agent, agent_format, trigger, next_fire, "
                       "state, misfire_grace, coalesce, max_running, timezone, created, version, inputs) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (rec.id, rec.name, rec.target, rec.agent, rec.agent_format, json.dumps(rec.trigger),
                        rec.next_fire, rec.state, rec.misfire_grace, int(rec.coalesce), rec.max_running,
                        rec.timezone, rec.created, rec.version, rec.inputs))

    def get(self, key: str) -> ScheduleRecord | None:
        """The schedule with id ``key`` (or the only one named ``key``)."""
        rows = self._query(f"SELECT {_COLS} FROM schedule_schedules WHERE id=?", (key,))
        if not rows:
            rows = self._query(f"SELECT {_COLS} FROM schedule_schedules WHERE name=? AND state != ?",
                               (key, CANCELLED))
            if len(rows) > 1:
                raise StoreError(f"{len(rows)} schedules are named {key!r}: use the id")
        return _record(rows[0]) if rows else None

    def all(self, *, include_ended: bool = False) -> list[ScheduleRecord]:
        """Every schedule, oldest first (``include_ended``: also finished and cancelled ones)."""
        where = "" if include_ended else f" WHERE state IN ('{ACTIVE}', '{PAUSED}')"
        return [_record(r) for r in self._query(f"SELECT {_COLS} FROM schedule_schedules{where} ORDER BY created, id")]

    def set_state(self, key: str, state: str, *, trigger: dict[str, Any] | None = None,
                  next_fire: float | None = None, firing: Firing | None = None) -> ScheduleRecord:
        """Change a schedule's state (and optionally its trigger / next fire time); returns the new record."""
        with self._tx() as db:
            rec = self._get_locked(db, key)
            trig = rec.trigger if trigger is None else trigger
            nxt = rec.next_fire if trigger is None else next_fire
            db.execute("UPDATE schedule_schedules SET state=?, trigger=?, next_fire=?, version=version+1 WHERE id=?",
                       (state, json.dumps(trig), nxt, rec.id))
            if firing is not None:
                self._insert_firings(db, [replace(firing, schedule_id=rec.id)])
        return replace(rec, state=state, trigger=trig, next_fire=nxt, version=rec.version + 1)

    def _get_locked(self, db: sqlite3.Connection, key: str) -> ScheduleRecord:
        row = db.execute(f"SELECT {_COLS} FROM schedule_schedules WHERE id=?", (key,)).fetchone()
        if row is None:
            raise StoreError(f"no schedule {key!r} in {self.path or 'the in-memory store'}")
        return _record(row)

    # -- firing --------------------------------------------------------------------------------
    def commit_tick(self, updates: Sequence[Update], firings: Sequence[Firing], *,
                    need_lease: bool) -> tuple[set[str], dict[tuple[str, float], int], bool]:
        """Apply ``updates`` (compare-and-set) and record ``firings`` of the updated schedules, atomically.

        Returns the ids whose update lost the race (changed meanwhile: their firings are dropped),
        the new firing row ids by ``(schedule_id, due)`` and whether the lease was held.  With
        ``need_lease``, nothing is written unless this store's owner holds the lease.
        """
        lost: set[str] = set()
        ids: dict[tuple[str, float], int] = {}
        with self._tx() as db:
            if need_lease and not self._holds_lease(db):
                return {u.id for u in updates}, ids, False
            for u in updates:
                cur = db.execute("UPDATE schedule_schedules SET trigger=?, next_fire=?, state=?, version=version+1 "
                                 "WHERE id=? AND version=?", (json.dumps(u.trigger), u.next_fire, u.state, u.id,
                                                              u.version))
                if cur.rowcount != 1:
                    lost.add(u.id)
            kept = [f for f in firings if f.schedule_id not in lost]
            for f in kept:
                cur = db.execute("INSERT INTO schedule_firings (schedule_id, due, outcome, reason, count, last_due, "
                                 "decided, handoff, run_id, owner) VALUES (?,?,?,?,?,?,?,?,?,?)",
                                 (f.schedule_id, f.due, f.outcome, f.reason, f.count, f.last_due, f.decided,
                                  f.handoff, f.run_id, self.owner))
                ids[(f.schedule_id, f.due)] = cur.lastrowid
        return lost, ids, True

    def _insert_firings(self, db: sqlite3.Connection, firings: Iterable[Firing]) -> None:
        for f in firings:
            db.execute("INSERT OR IGNORE INTO schedule_firings (schedule_id, due, outcome, reason, count, last_due, "
                       "decided, handoff, run_id, owner) VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (f.schedule_id, f.due, f.outcome, f.reason, f.count, f.last_due, f.decided, f.handoff,
                        f.run_id, self.owner))

    def record_handoffs(self, handoffs: Sequence[tuple[int, float, str | None, str | None, str | None]]) -> None:
        """``(firing id, time, run id, outcome, reason)``: the run was submitted (``outcome`` None),
        or the firing became ``"missed"`` / ``"skipped"`` after all (not handed off in time, submit failed)."""
        if not handoffs:
            return
        with self._tx() as db:
            for fid, at, run_id, outcome, reason in handoffs:
                if outcome is None:
                    db.execute("UPDATE schedule_firings SET handoff=?, run_id=? WHERE id=?", (at, run_id, fid))
                else:
                    db.execute("UPDATE schedule_firings SET decided=?, outcome=?, reason=? WHERE id=?",
                               (at, outcome, reason, fid))

    def firings(self, schedule_id: str | None = None, *, limit: int | None = None) -> list[Firing]:
        """Recorded firings, oldest first (the last ``limit`` ones if given)."""
        where, args = ("WHERE schedule_id=?", [schedule_id]) if schedule_id else ("", [])
        sql = f"SELECT {_FCOLS} FROM schedule_firings {where} ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [_firing(r) for r in reversed(self._query(sql, args))]

    def outcome_counts(self) -> dict[str, dict[str, int]]:
        """How many due times each schedule had of each outcome: ``{schedule id: {"fired": n, ...}}``."""
        out: dict[str, dict[str, int]] = {}
        for sid, outcome, n in self._query("SELECT schedule_id, outcome, SUM(count) FROM schedule_firings "
                                           "GROUP BY schedule_id, outcome"):
            out.setdefault(sid, {})[outcome] = int(n)
        return out

    def changes(self) -> int:
        """A number that changes when another connection (process) has committed to the file."""
        return int(self._query("PRAGMA data_version")[0][0])

    # -- lease ---------------------------------------------------------------------------------------
    def acquire_lease(self, ttl: float, now: float | None = None) -> tuple[bool, str]:
        """Take (or renew) the lease for ``ttl`` seconds; ``(False, who holds it)`` if another live process does."""
        now = time.time() if now is None else now
        host, pid = socket.gethostname(), os.getpid()
        with self._tx() as db:
            row = db.execute("SELECT owner, host, pid, expires FROM schedule_lease WHERE name=?", (self.LEASE,)).fetchone()
            if row is not None and row[0] != self.owner and row[3] > now and not _dead(row[1], row[2]):
                return False, (f"pid {row[2]} on host {row[1]} holds the schedule lease of "
                               f"{self.path or 'this store'} (renewed until {time.ctime(row[3])})")
            db.execute("INSERT OR REPLACE INTO schedule_lease (name, owner, host, pid, acquired, expires) "
                       "VALUES (?,?,?,?,?,?)", (self.LEASE, self.owner, host, pid,
                                                now if row is None or row[0] != self.owner else now, now + ttl))
        return True, self.owner

    def release_lease(self) -> None:
        """Give the lease up (if held)."""
        with self._tx() as db:
            db.execute("DELETE FROM schedule_lease WHERE name=? AND owner=?", (self.LEASE, self.owner))

    def lease_holder(self) -> dict[str, Any] | None:
        """The current lease row (owner, host, pid, acquired, expires), if any."""
        rows = self._query("SELECT owner, host, pid, acquired, expires FROM schedule_lease WHERE name=?", (self.LEASE,))
        return dict(zip(("owner", "host", "pid", "acquired", "expires"), rows[0])) if rows else None

    def _holds_lease(self, db: sqlite3.Connection) -> bool:
        row = db.execute("SELECT owner FROM schedule_lease WHERE name=?", (self.LEASE,)).fetchone()
        return row is not None and row[0] == self.owner

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


_COLS = ("id, name, target, trigger, next_fire, state, misfire_grace, coalesce, max_running, timezone, created, "
         "version, agent, agent_format, inputs")
_FCOLS = "schedule_id, due, outcome, reason, count, last_due, decided, handoff, run_id, id"


def _record(row: tuple) -> ScheduleRecord:
    (id_, name, target, trigger, next_fire, state, grace, coalesce, max_running, tz, created, version, agent,
     agent_format, inputs) = row
    return ScheduleRecord(id_, name, target, json.loads(trigger), next_fire, ScheduleState(state), grace,
                          bool(coalesce), max_running, tz, created, version, agent, agent_format, inputs)


def _firing(row: tuple) -> Firing:
    schedule_id, due, outcome, *rest = row
    return Firing(schedule_id, due, Outcome(outcome), *rest)


def _dead(host: str, pid: int) -> bool:
    """True if ``pid`` on ``host`` is this host's and no longer exists (its lease can be taken)."""
    if host != socket.gethostname():
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
