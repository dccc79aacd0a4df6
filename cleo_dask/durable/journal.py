"""The run journal: a SQLite file recording runs, nodes, attempts and where results are stored.

Opened with :func:`cleo_dask.util.sqlite.connect` (WAL, busy timeout), every write in one short
``BEGIN IMMEDIATE`` transaction, so many processes (notebooks, batch scripts, a ``cleo-dask
serve``) share one file.  Tables are prefixed ``journal_`` (the schedule store may live in the
same file).  ``journal_meta`` holds the schema version, checked at open: another version is a
:class:`StoreError`.

The spec needed to resume a run (the workflow, the agent and the submit options) is kept as a
cloudpickle with its SHA-256.  The journal is the user's own file and is trusted like any
pickle they load: never open a journal from an untrusted source.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cleo_dask.durable.durationcache import DurationCache
from cleo_dask.durable.unpickle import loads
from cleo_dask.errors import StoreError
from cleo_dask.util.sqlite import connect, transient

SCHEMA_VERSION = 1
HOST = socket.gethostname()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal_runs (
    id TEXT PRIMARY KEY, agent TEXT, workflow TEXT, name TEXT, status TEXT NOT NULL,
    started REAL, ended REAL, resumes INTEGER NOT NULL DEFAULT 0, results TEXT,
    nodes INTEGER, counts TEXT, spec BLOB, spec_sha256 TEXT, note TEXT, host TEXT, pid INTEGER);
CREATE INDEX IF NOT EXISTS journal_runs_by_agent ON journal_runs(agent, status, started);
CREATE INDEX IF NOT EXISTS journal_runs_by_started ON journal_runs(started);
CREATE TABLE IF NOT EXISTS journal_nodes (
    run_id TEXT NOT NULL REFERENCES journal_runs(id) ON DELETE CASCADE, node TEXT NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, started REAL, ended REAL, worker TEXT,
    result TEXT, cache_key TEXT, resumable INTEGER NOT NULL DEFAULT 1, note TEXT,
    PRIMARY KEY (run_id, node));
CREATE TABLE IF NOT EXISTS journal_attempts (
    run_id TEXT NOT NULL REFERENCES journal_runs(id) ON DELETE CASCADE, node TEXT NOT NULL,
    number INTEGER NOT NULL, started REAL, ended REAL, worker TEXT, error TEXT, error_type TEXT,
    PRIMARY KEY (run_id, node, number));
"""

_UPDATE_NODE = ("UPDATE journal_nodes SET status = ?, attempts = ?, started = ?, ended = ?, worker = ?, result = ? "
                "WHERE run_id = ? AND node = ?")
_PUT_ATTEMPT = "INSERT OR REPLACE INTO journal_attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?)"

#: Node statuses whose output is a result a resumed run keeps.
FINISHED = ("succeeded", "fell_back", "skipped")
#: Statuses of nodes that did not run; their note says why (the failing ancestor of an upstream_failed one).
_SKIPS = ("skipped", "upstream_failed")
#: Run statuses (``engine.runs(status=...)``, ``cleo-dask runs list --status``).
RUN_STATUSES = ("running", "succeeded", "failed", "cancelled", "interrupted")


@dataclass(frozen=True)
class RunRecord:
    """One run as the journal knows it (``engine.runs()``, ``cleo-dask runs list``).

    ``status``: ``running``, ``succeeded``, ``failed``, ``cancelled``, or ``interrupted`` (its
    cluster was lost, its engine closed or its resume failed before it finished; or the journal
    says running but the process that ran it, on this host, is gone): resume it.
    """

    id: str
    agent: str
    workflow: str
    name: str
    status: str
    started: float | None
    ended: float | None
    resumes: int = 0
    nodes: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    results: str | None = None
    note: str | None = None
    host: str | None = None
    pid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class NodeRow:
    """One node of a journaled run."""

    node: str
    status: str
    attempts: int
    started: float | None
    ended: float | None
    worker: str | None
    result: str | None
    cache_key: str | None
    resumable: bool
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return dict(self.__dict__)


class Journal:
    """The journal at ``path`` (created unless ``create=False``).

    An existing empty (0-byte) file is a :class:`StoreError`, not a new journal: SQLite would
    silently take it for an empty database, but cleo_dask never leaves a journal empty (one it
    could not initialise, e.g. on a full disk, it removes), so it was truncated or is not ours.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True):
        self.path = os.fspath(path)
        existed = os.path.exists(self.path)
        if not create and not existed:
            raise StoreError(f"no journal at {self.path}")
        if existed and _empty(self.path):
            raise StoreError(f"journal {self.path} is an empty file (0 bytes), not a journal: if it held runs, it "
                             "was truncated (a full disk? an interrupted copy?) and they are lost (their result "
                             "files may remain); remove the file to start a new journal there")
        self._lock = threading.Lock()
        self._durations = DurationCache(self._measured)
        self._conn: sqlite3.Connection | None = None
        try:
            try:
                self._conn = connect(self.path)
            except sqlite3.Error as exc:
                raise StoreError(f"journal {self.path} cannot be opened: {exc}{_hint(exc)}") from None
            self._write(self._init_schema)
        except BaseException:
            if self._conn is not None:
                self._conn.close()
            if not existed:
                _remove_if_empty(self.path)  # do not leave a 0-byte file that looks like a truncated journal
            raise

    # -- plumbing -----------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> StoreError:
        if _is_full(exc):
            return StoreError(f"journal {self.path} cannot be written ({type(exc).__name__}: {exc}){_hint(exc)}")
        return StoreError(f"journal {self.path} cannot be used ({type(exc).__name__}: {exc}); "
                          "is it a cleo_dask journal, and intact?")

    def _write(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(conn, *args)`` in one IMMEDIATE transaction (retried if the file stays locked)."""
        with self._lock:
            for attempt in range(20):
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                    try:
                        out = fn(self._conn, *args)
                    except BaseException:
                        self._conn.execute("ROLLBACK")
                        raise
                    self._conn.execute("COMMIT")
                    return out
                except sqlite3.OperationalError as exc:
                    if transient(exc):
                        time.sleep(min(0.05 * (attempt + 1), 1.0))
                        continue
                    raise self._fail(exc) from None
                except sqlite3.DatabaseError as exc:
                    raise self._fail(exc) from None
            raise StoreError(f"journal {self.path} stayed locked by other processes")

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self._fail(exc) from None

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS journal_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = conn.execute("SELECT value FROM journal_meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(stmt)
            conn.execute("INSERT INTO journal_meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif row[0] != str(SCHEMA_VERSION):
            raise StoreError(f"journal {self.path} has schema version {row[0]}; this cleo_dask reads "
                             f"version {SCHEMA_VERSION} (use a new file or a matching cleo_dask)")

    def check(self) -> None:
        """SQLite's ``quick_check`` of the whole file; :class:`StoreError` naming it if damaged."""
        problems = [r[0] for r in self._read("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise StoreError(f"journal {self.path} is damaged: {'; '.join(problems[:3])}")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    # -- writing ------------------------------------------------------------------------------
    def add_run(self, run_id: str, *, agent: str, workflow: str, name: str, started: float, nodes: list[str],
                results: str, spec: bytes | None, note: str | None = None) -> None:
        """Record a new run (status ``running``) and its nodes (``pending``)."""
        self.add_runs([dict(run_id=run_id, agent=agent, workflow=workflow, name=name, started=started, nodes=nodes,
                            results=results, spec=spec, note=note)])

    def add_runs(self, runs: Iterable[dict[str, Any]]) -> None:
        """Record new runs (each a mapping of :meth:`add_run`'s arguments) in one transaction:
        all of them, or (:class:`StoreError`) none."""
        runs = list(runs)

        def tx(conn: sqlite3.Connection) -> None:
            for r in runs:
                spec = r.get("spec")
                digest = hashlib.sha256(spec).hexdigest() if spec is not None else None
                conn.execute("INSERT INTO journal_runs (id, agent, workflow, name, status, started, results, nodes, "
                             "spec, spec_sha256, note, host, pid) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
                             (r["run_id"], r["agent"], r["workflow"], r["name"], r["started"], r["results"],
                              len(r["nodes"]), spec, digest, r.get("note"), HOST, os.getpid()))
                conn.executemany("INSERT INTO journal_nodes (run_id, node, status) VALUES (?, ?, 'pending')",
                                 [(r["run_id"], n) for n in r["nodes"]])
        if runs:
            self._write(tx)

    def mark_nodes(self, run_id: str, rows: Iterable[tuple], attempts: Iterable[tuple] = ()) -> None:
        """Update nodes: rows of ``(node, status, attempts, started, ended, worker, result)``, and
        record ``attempts`` (as in :meth:`finish_run`), in one transaction (one statement each)."""
        self.mark_nodes_many([(run_id, rows, attempts)])

    def mark_nodes_many(self, writes: Iterable[tuple[str, Iterable[tuple], Iterable[tuple]]]) -> None:
        """:meth:`mark_nodes` of many runs, ``(run_id, rows, attempts)`` each, in one transaction."""
        rows, attempt_rows = [], []
        for run_id, nodes, attempts in writes:
            rows.extend((*r[1:], run_id, r[0]) for r in nodes)
            attempt_rows.extend((run_id, *a) for a in attempts)

        def tx(conn: sqlite3.Connection) -> None:
            conn.executemany(_UPDATE_NODE, rows)
            if attempt_rows:
                conn.executemany(_PUT_ATTEMPT, attempt_rows)
        if rows or attempt_rows:
            self._write(tx)

    def annotate(self, run_id: str, node: str, *, resumable: bool | None = None, note: str | None = None,
                 cache_key: str | None = None) -> None:
        """Set a node's ``resumable`` flag, note and cache key (``None`` leaves a field as is)."""
        self._write(lambda conn: conn.execute(
            "UPDATE journal_nodes SET resumable = COALESCE(?, resumable), note = COALESCE(?, note), "
            "cache_key = COALESCE(?, cache_key) WHERE run_id = ? AND node = ?",
            (None if resumable is None else int(resumable), note, cache_key, run_id, node)))

    def finish_run(self, run_id: str, *, status: str, ended: float | None, counts: dict[str, int],
                   nodes: Iterable[tuple] = (), attempts: Iterable[tuple] = (),
                   notes: Mapping[str, str] | None = None) -> None:
        """Record a run's end: its status and counts, each node's final row, every attempt
        (``(node, number, started, ended, worker, error, error_type)``) and a note per node
        (why it was skipped or upstream_failed)."""
        nodes = list(nodes)
        wanted_attempts = {(a[0], a[1]): tuple(a[2:]) for a in attempts}
        notes = dict(notes or {})

        def tx(conn: sqlite3.Connection) -> None:
            # only what differs from what the poller wrote as units finished is written
            conn.execute("UPDATE journal_runs SET status = ?, ended = ?, counts = ? WHERE id = ?",
                         (status, ended, json.dumps(counts), run_id))
            now = {r[0]: r[1:] for r in conn.execute(
                "SELECT node, status, attempts, started, ended, worker, result, note FROM journal_nodes "
                "WHERE run_id = ?", (run_id,))}
            changed = [(*r[1:], run_id, r[0]) for r in nodes if now.get(r[0], ())[:6] != tuple(r[1:])]
            # a node skipped before (an earlier generation) that ran now loses the old reason
            ran = [(run_id, r[0]) for r in nodes if r[1] not in _SKIPS and now.get(r[0], ("",))[0] in _SKIPS]
            conn.executemany("UPDATE journal_nodes SET note = NULL WHERE run_id = ? AND node = ?", ran)
            conn.executemany(_UPDATE_NODE, changed)
            had = {(r[0], r[1]): r[2:] for r in conn.execute(
                "SELECT node, number, started, ended, worker, error, error_type FROM journal_attempts "
                "WHERE run_id = ?", (run_id,))}
            conn.executemany("DELETE FROM journal_attempts WHERE run_id = ? AND node = ? AND number = ?",
                             [(run_id, *k) for k in had.keys() - wanted_attempts.keys()])
            conn.executemany(_PUT_ATTEMPT, [(run_id, *k, *v) for k, v in wanted_attempts.items() if had.get(k) != v])
            conn.executemany("UPDATE journal_nodes SET note = ? WHERE run_id = ? AND node = ?",
                             [(note, run_id, node) for node, note in notes.items()
                              if node not in now or now[node][-1] != note or now[node][0] not in _SKIPS])
        self._write(tx)

    def interrupt(self, run_id: str, ended: float | None = None) -> None:
        """Mark a running run ``interrupted`` (it did not finish; resume it)."""
        self._write(lambda conn: conn.execute(
            "UPDATE journal_runs SET status = 'interrupted', ended = ? WHERE id = ? AND status = 'running'",
            (ended if ended is not None else time.time(), run_id)))

    def start_resume(self, run_id: str) -> int:
        """Mark a run running again; returns its resume count (1 for the first resume)."""
        def tx(conn: sqlite3.Connection) -> int:
            conn.execute("UPDATE journal_runs SET status = 'running', ended = NULL, resumes = resumes + 1, "
                         "host = ?, pid = ? WHERE id = ?", (HOST, os.getpid(), run_id))
            conn.execute("UPDATE journal_nodes SET status = 'pending', note = CASE WHEN status = 'upstream_failed' "
                         "THEN NULL ELSE note END WHERE run_id = ? AND status NOT IN "
                         f"({', '.join('?' * len(FINISHED))})", (run_id, *FINISHED))
            return conn.execute("SELECT resumes FROM journal_runs WHERE id = ?", (run_id,)).fetchone()[0]
        return self._write(tx)

    def forget(self, run_id: str) -> None:
        """Delete a run, its nodes and attempts from the journal."""
        def tx(conn: sqlite3.Connection) -> None:
            for table in ("journal_attempts", "journal_nodes"):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM journal_runs WHERE id = ?", (run_id,))
        self._write(tx)

    # -- reading ------------------------------------------------------------------------------
    _RUN_COLS = "id, agent, workflow, name, status, started, ended, resumes, nodes, counts, results, note, host, pid"

    def _record(self, row: tuple) -> RunRecord:
        counts = json.loads(row[9]) if row[9] else {}
        status = row[4]
        if status == "running" and row[12] == HOST and row[13] is not None and not _alive(row[13]):
            status = "interrupted"  # its process is gone: resume it
        return RunRecord(row[0], row[1] or "", row[2] or "", row[3] or "", status, row[5], row[6], row[7] or 0,
                         row[8] or 0, counts, row[10], row[11], row[12], row[13])

    def run(self, run_id: str) -> RunRecord:
        """The record of run ``run_id``; :class:`StoreError` if the journal has no such run."""
        rows = self._read(f"SELECT {self._RUN_COLS} FROM journal_runs WHERE id = ?", (run_id,))
        if not rows:
            raise StoreError(f"journal {self.path} has no run {run_id!r}")
        return self._record(rows[0])

    def runs(self, *, agent: str | None = None, status: str | None = None, workflow: str | None = None,
             limit: int | None = None) -> list[RunRecord]:
        """Runs, newest first, optionally only of one agent / status / workflow."""
        where, params = [], []
        wanted = status
        for col, val in (("agent", agent), ("workflow", workflow)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        if status == "interrupted":  # recorded so, or running as far as the journal knows but its process is gone
            where.append("status IN ('interrupted', 'running')")
        elif status is not None:
            where.append("status = ?")
            params.append(status)
        sql = f"SELECT {self._RUN_COLS} FROM journal_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        records = [self._record(r) for r in self._read(sql, params)]
        return [r for r in records if wanted is None or r.status == wanted]

    def statuses(self, run_ids: Iterable[str]) -> dict[str, tuple[str, int]]:
        """``(status, resumes)`` of those of ``run_ids`` the journal has (one query per 500 ids; a
        ``running`` run of a dead process is not told apart here: :meth:`run` does that)."""
        ids, out = list(run_ids), {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = self._read(f"SELECT id, status, resumes FROM journal_runs WHERE id IN ({', '.join('?' * len(chunk))})",
                              chunk)
            out.update((r[0], (r[1], r[2] or 0)) for r in rows)
        return out

    def nodes(self, run_id: str) -> dict[str, NodeRow]:
        """The nodes of a run, by name."""
        rows = self._read("SELECT node, status, attempts, started, ended, worker, result, cache_key, resumable, note "
                          "FROM journal_nodes WHERE run_id = ? ORDER BY rowid", (run_id,))
        return {r[0]: NodeRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), r[9]) for r in rows}

    def node_durations(self, workflow: str, limit: int = 100_000) -> dict[str, float]:
        """Mean seconds each node of workflow ``workflow`` took when it succeeded in earlier runs
        (up to ``limit`` nodes; read-only): what a big run's first window is compiled knowing.
        A workflow measured many times is read again at most every ``durable.durations-ttl``
        seconds (see :mod:`cleo_dask.durable.durationcache`)."""
        return self._durations.get(workflow, int(limit))

    def _measured(self, workflow: str, limit: int) -> dict[str, tuple[float, int]]:
        rows = self._read("SELECT n.node, AVG(n.ended - n.started), COUNT(*) FROM journal_nodes n "
                          "JOIN journal_runs r ON r.id = n.run_id WHERE r.workflow = ? AND n.status = 'succeeded' "
                          "AND n.started IS NOT NULL AND n.ended IS NOT NULL GROUP BY n.node LIMIT ?",
                          (workflow, int(limit)))
        return {node: (seconds, count) for node, seconds, count in rows if seconds is not None}

    def attempts(self, run_id: str) -> list[tuple]:
        """Every recorded attempt: ``(node, number, started, ended, worker, error, error_type)``."""
        return self._read("SELECT node, number, started, ended, worker, error, error_type FROM journal_attempts "
                          "WHERE run_id = ? ORDER BY node, number", (run_id,))

    def spec(self, run_id: str) -> bytes:
        """The pickled spec of a run (checked against its SHA-256)."""
        rows = self._read("SELECT spec, spec_sha256, note FROM journal_runs WHERE id = ?", (run_id,))
        if not rows:
            raise StoreError(f"journal {self.path} has no run {run_id!r}")
        spec, digest, note = rows[0]
        if spec is None:
            raise StoreError(f"run {run_id!r} in journal {self.path} cannot be resumed: {note or 'no spec stored'}")
        if hashlib.sha256(spec).hexdigest() != digest:
            raise StoreError(f"journal {self.path}: the stored spec of run {run_id!r} is corrupted (checksum mismatch)")
        return bytes(spec)

    def load_spec(self, run_id: str) -> Any:
        """The spec of a run, unpickled (also one written by the flat module layout, see
        :mod:`cleo_dask.durable.unpickle`); a :class:`StoreError` if it names cleo_dask objects
        this version does not have."""
        return loads(self.spec(run_id), where=f"journal {self.path}: the spec of run {run_id!r}",
                     schema=f"journal schema version {SCHEMA_VERSION}")


def _empty(path: str, wait: float = 0.5) -> bool:
    """Whether the file at ``path`` is empty (0 bytes, no WAL content), waited for a moment: a
    process creating the journal right now writes its header within milliseconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            if os.path.getsize(path) > 0 or os.path.getsize(path + "-wal") > 0:
                return False
        except FileNotFoundError:
            if not os.path.exists(path):
                return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.05)


def _remove_if_empty(path: str) -> None:
    for p in (path, path + "-wal", path + "-shm"):
        try:
            if os.path.getsize(p) == 0 or p != path and not os.path.exists(path):
                os.remove(p)
        except OSError:
            pass


def _is_full(exc: BaseException) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name in ("SQLITE_FULL", "SQLITE_IOERR") or name.startswith("SQLITE_IOERR") or "disk is full" in str(exc)


def _hint(exc: BaseException) -> str:
    return "; is the disk full?" if _is_full(exc) else ""


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
