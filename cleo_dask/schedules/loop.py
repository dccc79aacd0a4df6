"""The scheduling loop: a :class:`Scheduler` owns a :class:`~cleo_dask.schedules.store.ScheduleStore`
and one thread that fires its schedules.  Each :meth:`Scheduler.tick` takes the schedules due at
``now`` (from an in-memory heap of next fire times), asks each trigger for every fire time up to
``now``, lets the pure misfire policy (:func:`cleo_dask.schedules.misfire.plan`) decide, commits
the decisions to the store in one transaction (compare-and-set per schedule, lease checked) and
only then hands the runs to the ``submit`` function (a small thread pool, so a slow submission
does not delay the next firing).  The clock and the submit function are passed in, so the
arithmetic is testable with a fixed time.  With ``lookahead > 0`` firings are *pre-staged*
(:mod:`cleo_dask.schedules.prestage`): decided up to ``lookahead`` seconds before they are due and
handed over in one batch per tick (``submit_many``), the cluster holding each run until due.

A persistent store is shared with other processes (``cleo-dask schedule add/pause/...``): the loop
notices their commits (SQLite's ``data_version``) and reloads.  Only the process holding the
store's lease fires; the others stand by and retry.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from cleo_dask.core.inputs import load_inputs
from cleo_dask.errors import ScheduleError
from cleo_dask.schedules.agents import agent_from_bytes
from cleo_dask.schedules.changes import cancel_record, pause_record, resume_record
from cleo_dask.schedules.handle import Schedule
from cleo_dask.schedules.misfire import plan
from cleo_dask.schedules.prestage import Prestaged, decide_at
from cleo_dask.schedules.records import (ACTIVE, FINISHED, FIRED, MISSED, SKIPPED, STOPPED, Decision, Firing,
                                         ScheduleRecord, Update)
from cleo_dask.schedules.settings import MAX_CATCH_UP, setting
from cleo_dask.schedules.store import ScheduleStore
from cleo_dask.schedules.triggers import Trigger, trigger_from_state

logger = logging.getLogger("cleo_dask")


@dataclass
class _Entry:
    record: ScheduleRecord
    trigger: Trigger
    target: Any = None
    agent: Any = None
    inputs: dict[str, Any] | None = None   # in memory (also values a store cannot keep as JSON)
    runs: deque = field(default_factory=lambda: deque(maxlen=int(setting("keep-runs", 100))))
    inflight: int = 0


class Scheduler:
    """Fires the schedules of ``store`` by calling ``submit(target, agent, schedule, due) -> run`` when due.

    ``clock()``: epoch seconds (``time.time``).  ``is_running(run)``: whether a run still counts
    toward ``max_running``.  ``start=False``: no thread; call :meth:`tick` yourself (tests).

    ``lookahead`` (seconds, default 0: decide at the due time): pre-stage firings that far ahead;
    ``submit`` must then make the run wait for ``due`` itself (a not-before time).
    ``submit_many(items) -> [run or exception]``: hands a tick's ``(target, agent, schedule, due)``
    items over in one go.  ``withdraw(runs) -> [bool]``: cancels pre-staged runs that were not
    released yet (True for those), when their schedule is paused or cancelled or the loop closes.
    """

    def __init__(self, store: ScheduleStore, submit: Callable[[Any, Any, Schedule, float], Any], *,
                 clock: Callable[[], float] = time.time, is_running: Callable[[Any], bool] | None = None,
                 start: bool = True, lease_ttl: float | None = None, submit_threads: int | None = None,
                 require_lease: bool = False, lookahead: float = 0.0,
                 submit_many: Callable[[list[tuple[Any, Any, Schedule, float]]], list[Any]] | None = None,
                 withdraw: Callable[[list[Any]], list[bool]] | None = None):
        self.store = store
        self._submit = submit
        self._submit_many = submit_many
        self._withdraw = withdraw
        self.lookahead = max(0.0, float(lookahead or 0.0))
        self._prestaged = Prestaged()
        self._clock = clock
        self._is_running = is_running or (lambda run: not run.done())
        self._cv = threading.Condition(threading.RLock())
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._handoffs: list[tuple[int, float, str | None, str | None, str | None]] = []
        self._closed = False
        self._lease_ttl = float(lease_ttl if lease_ttl is not None else setting("lease-ttl", 30))
        self._poll = float(setting("poll-interval", 0.5))
        self._lease_at = 0.0
        self._changes = -1
        self.leader = not store.persistent
        self.lease_error: str | None = None
        if store.persistent:
            self._try_lease()
            if require_lease and not self.leader:
                raise ScheduleError(f"refusing to serve {store.path}: {self.lease_error}")
        self._reload()
        threads = int(submit_threads if submit_threads is not None else setting("submit-threads", 8))
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="cleo-schedule-submit") if start else None
        self._thread = None
        if start:
            self._thread = threading.Thread(target=self._loop, name="cleo-scheduler", daemon=True)
            self._thread.start()

    # -- the public side (used by Engine.schedule and the handle) -----------------------------------
    def add(self, record: ScheduleRecord, target: Any = None, agent: Any = None,
            inputs: dict[str, Any] | None = None) -> Schedule:
        """Store a new schedule and start timing it."""
        self.store.add(record)
        with self._cv:
            e = self._entries[record.id] = _Entry(record, trigger_from_state(record.trigger), target, agent,
                                                  dict(inputs) if inputs else None)
            self._push(e)
            self._cv.notify_all()
        return Schedule(self, record.id)

    def schedules(self, include_ended: bool = False) -> list[Schedule]:
        """Handles of the store's schedules (active and paused; ``include_ended`` adds the others)."""
        return [Schedule(self, r.id) for r in self.store.all(include_ended=include_ended)]

    def get(self, key: str) -> Schedule:
        """The handle of schedule ``key`` (id or unique name)."""
        return Schedule(self, self.record(key).id)

    def _apply(self, rec: ScheduleRecord) -> None:
        with self._cv:
            e = self._entries.get(rec.id)
            if e is None:
                e = self._entries[rec.id] = _Entry(rec, trigger_from_state(rec.trigger))
            e.record, e.trigger = rec, trigger_from_state(rec.trigger)
            self._push(e)
            self._cv.notify_all()
        if rec.state in STOPPED:
            self._withdraw_prestaged(rec.id, f"the schedule was {rec.state} before its due time: the run "
                                             "handed over ahead of time was cancelled")

    def _prestages(self, rec: ScheduleRecord) -> bool:
        """Whether firings of ``rec`` are decided ahead of time (not with ``max_running``)."""
        return self.lookahead > 0 and rec.max_running is None

    def _decide_at(self, rec: ScheduleRecord, due: float) -> float:
        return decide_at(due, self.lookahead) if self._prestages(rec) else due

    def _push(self, e: _Entry) -> None:
        if e.record.state == ACTIVE and e.record.next_fire is not None:
            nf = e.record.next_fire
            heapq.heappush(self._heap, (self._decide_at(e.record, nf), next(self._seq), e.record.id, nf))

    def _reload(self) -> None:
        """Bring the in-memory view in line with the store (after another process changed it)."""
        self._changes = self.store.changes()
        records = {r.id: r for r in self.store.all(include_ended=True)}
        stopped = []
        with self._cv:
            for sid in list(self._entries):
                if sid not in records:
                    del self._entries[sid]
                    stopped.append((sid, "removed"))
            for rec in records.values():
                e = self._entries.get(rec.id)
                if e is None or e.record.version != rec.version:
                    if e is None:
                        e = self._entries[rec.id] = _Entry(rec, trigger_from_state(rec.trigger))
                    elif e.record.state not in STOPPED and rec.state in STOPPED:
                        stopped.append((rec.id, rec.state))
                    e.record, e.trigger = rec, trigger_from_state(rec.trigger)
                    self._push(e)
            self._cv.notify_all()
        for sid, state in stopped:  # paused / cancelled by another process (cleo-dask schedule ...)
            self._withdraw_prestaged(sid, f"the schedule was {state} before its due time: the run handed "
                                          "over ahead of time was cancelled")

    # -- one step -------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> list[Firing]:
        """Decide every firing due at ``now``, record it, hand the runs to ``submit``; the decisions."""
        now = self._clock() if now is None else now
        if not self.leader:
            return []
        with self._cv:
            due: list[_Entry] = []
            seen: set[str] = set()
            while self._heap and self._heap[0][0] <= now:
                _, _, sid, t = heapq.heappop(self._heap)
                e = self._entries.get(sid)
                if e is None or sid in seen or e.record.state != ACTIVE or e.record.next_fire != t:
                    continue  # stale heap entry
                seen.add(sid)
                due.append(e)
            if not due:
                return []
            updates, firings, plans = [], [], []
            for e in due:
                rec = e.record
                trig = trigger_from_state(rec.trigger)
                times, nxt = [rec.next_fire], None
                while True:
                    t = trig.next()
                    if t is None:
                        break
                    ts = t.timestamp()
                    if self._decide_at(rec, ts) > now or len(times) >= MAX_CATCH_UP:
                        nxt = ts
                        break
                    times.append(ts)
                decisions = self._plan(e, times, now)
                updates.append(Update(rec.id, rec.version, trig.state(), nxt, ACTIVE if nxt is not None else FINISHED))
                for d in decisions:
                    firings.append(Firing(rec.id, d.due, d.outcome, d.reason, d.count, d.last_due, decided=now))
                plans.append((e, trig, nxt, decisions))
            lost, ids, leased = self.store.commit_tick(updates, firings, need_lease=self.store.persistent)
            if not leased:  # another process took the lease (we stalled past its ttl): stand by
                self.leader, self.lease_error = False, "the lease was taken by another process"
                for e in due:
                    self._push(e)
                return []
            submits = []
            for e, trig, nxt, decisions in plans:
                if e.record.id in lost:
                    continue
                e.record = replace(e.record, trigger=trig.state(), next_fire=nxt,
                                   state=ACTIVE if nxt is not None else FINISHED, version=e.record.version + 1)
                e.trigger = trig
                self._push(e)
                for d in decisions:
                    if d.fires:
                        e.inflight += 1
                        submits.append((e, d.due, ids.get((e.record.id, d.due))))
        if lost:
            self._reload()
            with self._cv:
                for sid in lost:
                    if sid in self._entries:
                        self._push(self._entries[sid])
        if self.lookahead > 0 or self._submit_many is not None:
            if submits:  # one batch per tick
                if self._pool is not None:
                    self._pool.submit(self._hand_off_batch, submits)
                else:
                    self._hand_off_batch(submits)
        else:
            for e, due_at, fid in submits:
                if self._pool is not None:
                    self._pool.submit(self._hand_off, e, due_at, fid)
                else:
                    self._hand_off(e, due_at, fid)
        if self._pool is None:
            self.flush()
        return [f for f in firings if f.schedule_id not in lost]

    def _plan(self, e: _Entry, times: list[float], now: float) -> list[Decision]:
        """The misfire policy for the times already due; the pre-staged ones (not yet due) fire."""
        rec = e.record
        past = [t for t in times if t <= now]
        decisions = []
        if past:
            running = e.inflight + sum(1 for r in list(e.runs) if self._is_running(r))
            decisions = plan(past, now, grace=rec.misfire_grace, coalesce=rec.coalesce, running=running,
                             max_running=rec.max_running)
        return decisions + [Decision(t, FIRED) for t in times if t > now]

    def _hand_off(self, e: _Entry, due_at: float, fid: int | None) -> None:
        run = None
        outcome, reason = self._refusal(e, due_at, self._clock(), ahead=False)
        if outcome is None:
            try:
                target, agent = self._target_and_agent(e)
                run = self._submit(target, agent, Schedule(self, e.record.id), due_at)
            except Exception as exc:  # noqa: BLE001 - recorded as a skipped firing
                outcome, reason = SKIPPED, f"could not submit the run: {type(exc).__name__}: {exc}"
                logger.warning("schedule %s: %s", e.record.id, reason)
        at = self._clock()
        with self._cv:
            e.inflight -= 1
            if run is not None:
                e.runs.append(run)
            if fid is not None:
                self._handoffs.append((fid, at, getattr(run, "id", None), outcome, reason))

    def _refusal(self, e: _Entry, due_at: float, now: float, *, ahead: bool = True) -> tuple[str | None, str | None]:
        """Why a decided firing is not handed over after all (``(None, None)``: it is); ``ahead``:
        a run handed over before its due time is refused once its schedule stopped."""
        grace = e.record.misfire_grace
        if self._closed:
            return SKIPPED, "the scheduler was closed before the run could be submitted"
        if grace is not None and now - due_at > grace:
            # the submit threads fell behind (an overloaded client): a recorded miss, not an ever-growing delay
            return MISSED, (f"{now - due_at:.3f} s late when its turn to be submitted came, beyond "
                            f"misfire_grace={grace:g} s (submissions fell behind)")
        if ahead and e.record.state in STOPPED and due_at > now:
            return SKIPPED, f"the schedule was {e.record.state} before its run was handed over"
        return None, None

    def _submit_batch(self, items: list[tuple[_Entry, float, int | None]]) -> list[Any]:
        """Submit the runs of ``items``: a run or the exception that prevented it, for each."""
        calls, out = [], []
        for e, due_at, _ in items:
            try:
                target, agent = self._target_and_agent(e)
                calls.append((target, agent, Schedule(self, e.record.id), due_at))
                out.append(None)
            except Exception as exc:  # noqa: BLE001 - recorded as a skipped firing
                out.append(exc)
        if self._submit_many is not None and calls:
            try:
                runs = iter(self._submit_many(calls))
            except Exception as exc:  # noqa: BLE001
                runs = iter([exc] * len(calls))
        else:
            runs = iter(self._call_submit(*c) for c in calls)
        return [next(runs) if o is None else o for o in out]

    def _call_submit(self, target: Any, agent: Any, schedule: Schedule, due_at: float) -> Any:
        try:
            return self._submit(target, agent, schedule, due_at)
        except Exception as exc:  # noqa: BLE001 - recorded as a skipped firing
            return exc

    def _hand_off_batch(self, items: list[tuple[_Entry, float, int | None]]) -> None:
        """Hand a tick's firings over together; pre-staged runs are kept until due (to withdraw them)."""
        now = self._clock()
        go, done = [], []
        for e, due_at, fid in items:
            outcome, reason = self._refusal(e, due_at, now)
            if outcome is None:
                go.append((e, due_at, fid))
            else:
                done.append((e, due_at, fid, None, outcome, reason))
        for (e, due_at, fid), res in zip(go, self._submit_batch(go)):
            if isinstance(res, BaseException):
                reason = f"could not submit the run: {type(res).__name__}: {res}"
                logger.warning("schedule %s: %s", e.record.id, reason)
                done.append((e, due_at, fid, None, SKIPPED, reason))
            else:
                done.append((e, due_at, fid, res, None, None))
        at = self._clock()
        stopped = set()
        with self._cv:
            for e, due_at, fid, run, outcome, reason in done:
                e.inflight -= 1
                if run is not None:
                    e.runs.append(run)
                    if due_at > at and self.lookahead > 0:
                        self._prestaged.add(e.record.id, due_at, run, fid)
                        if e.record.state in STOPPED or self._closed:  # paused meanwhile: withdraw it now
                            stopped.add((e.record.id, e.record.state))
                if fid is not None:
                    self._handoffs.append((fid, at, getattr(run, "id", None), outcome, reason))
        for sid, state in stopped:
            self._withdraw_prestaged(sid, f"the schedule was {state} before its due time: the run handed over "
                                          "ahead of time was cancelled")

    def _withdraw_prestaged(self, schedule_id: str | None, reason: str) -> None:
        """Cancel the pre-staged runs of ``schedule_id`` (``None``: all) not released yet; record them skipped."""
        items = self._prestaged.take(schedule_id, self._clock())
        if not items or self._withdraw is None:
            return
        try:
            flags = self._withdraw([run for _, _, run, _ in items])
        except Exception:  # noqa: BLE001 - the runs then start at their due time, recorded as fired
            logger.warning("could not withdraw %d pre-staged run(s)", len(items), exc_info=True)
            return
        at = self._clock()
        with self._cv:
            for (sid, _, run, fid), withdrawn in zip(items, flags):
                if not withdrawn:
                    continue
                e = self._entries.get(sid)
                if e is not None and run in e.runs:
                    e.runs.remove(run)
                if fid is not None:
                    self._handoffs.append((fid, at, getattr(run, "id", None), SKIPPED, reason))
        self.flush()

    def flush(self) -> None:
        """Write the pending hand-off times and run ids to the store."""
        with self._cv:
            pending, self._handoffs = self._handoffs, []
        if pending:
            self.store.record_handoffs(pending)

    def _try_lease(self) -> None:
        ok, who = self.store.acquire_lease(self._lease_ttl, now=self._clock())
        if ok != self.leader:
            logger.info("cleo_dask scheduler %s the lease of %s", "took" if ok else "lost", self.store.path)
        self.leader, self.lease_error = ok, None if ok else who
        self._lease_at = self._clock()

    def _loop(self) -> None:
        last_poll = 0.0
        while True:
            with self._cv:
                if self._closed:
                    return
            try:
                now = self._clock()
                if self.store.persistent:
                    if now - self._lease_at > self._lease_ttl / 3:
                        self._try_lease()
                    if now - last_poll >= self._poll:
                        last_poll = now
                        if self.store.changes() != self._changes:
                            self._reload()
                self.tick(now)
                self.flush()
                self._prestaged.prune(now)
            except Exception:  # noqa: BLE001 - the loop must survive a bad schedule or a busy store
                logger.exception("cleo_dask scheduler tick failed")
                time.sleep(0.1)
            with self._cv:
                if self._closed:
                    return
                now = self._clock()
                wait = self._poll if self.store.persistent else 3600.0
                if self._heap and self.leader:
                    wait = min(wait, max(0.0, self._heap[0][0] - now))
                if self._handoffs:
                    wait = min(wait, 0.05)
                if wait > 0:
                    self._cv.wait(wait)

    def close(self) -> None:
        """Stop the loop, wait for submissions in progress, write their hand-offs, give the lease up."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._cv.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        try:
            self._withdraw_prestaged(None, "the scheduler was closed before its due time: the run handed over "
                                           "ahead of time was cancelled")
            self.flush()
            if self.store.persistent and self.leader:
                self.store.release_lease()
        finally:
            if self.store.persistent:  # an in-memory store stays readable (Schedule.firings()) after close
                self.store.close()

    # -- the handle's side (what :class:`~cleo_dask.schedules.handle.Schedule` calls) --------------------
    def now(self) -> float:
        """The loop's clock (epoch seconds)."""
        return self._clock()

    def record(self, schedule_id: str) -> ScheduleRecord:
        """The current record of ``schedule_id`` (this loop's view, else the store's)."""
        e = self._entry(schedule_id)
        if e is not None:
            return e.record
        rec = self.store.get(schedule_id)
        if rec is None:
            raise ScheduleError(f"no schedule {schedule_id!r}")
        return rec

    def inputs_of(self, schedule_id: str) -> dict[str, Any]:
        """The workflow parameters' values the runs of ``schedule_id`` are submitted with."""
        e = self._entry(schedule_id)
        if e is not None and e.inputs is not None:
            return dict(e.inputs)
        return load_inputs(self.record(schedule_id).inputs)

    def runs_of(self, schedule_id: str) -> list[Any]:
        """The runs ``schedule_id`` started through this loop (the last ``keep-runs``), oldest first."""
        with self._cv:
            e = self._entries.get(schedule_id)
            return [] if e is None else list(e.runs)

    def pause(self, schedule_id: str) -> None:
        """Pause ``schedule_id`` (its pre-staged runs are withdrawn)."""
        self._apply(pause_record(self.store, schedule_id))

    def resume(self, schedule_id: str) -> None:
        """Resume ``schedule_id``; the fire times that passed while paused are recorded as skipped."""
        self._apply(resume_record(self.store, schedule_id, self._clock()))

    def cancel(self, schedule_id: str) -> None:
        """Cancel ``schedule_id`` for good (its pre-staged runs are withdrawn)."""
        self._apply(cancel_record(self.store, schedule_id))

    def firings(self, schedule_id: str, limit: int | None = None) -> list[Firing]:
        """The recorded firings of ``schedule_id``, oldest first (pending hand-offs written first)."""
        self.flush()
        return self.store.firings(schedule_id, limit=limit)

    def _entry(self, sid: str) -> _Entry | None:
        with self._cv:
            return self._entries.get(sid)

    def _target_and_agent(self, e: _Entry) -> tuple[Any, Any]:
        if e.target is None:
            from cleo_dask.util.imports import resolve
            e.target = resolve(e.record.target, error=ScheduleError)
        if e.agent is None:
            e.agent = agent_from_bytes(e.record.agent, e.record.agent_format)
        return e.target, e.agent
