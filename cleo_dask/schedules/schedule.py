"""The scheduling loop and the :class:`Schedule` handle.

A :class:`Scheduler` owns a :class:`~cleo_dask.schedules.store.ScheduleStore` and one thread.
Each :meth:`Scheduler.tick` takes the schedules that are due at ``now`` (from an in-memory heap of
next fire times), asks each trigger for every fire time up to ``now``, lets the pure misfire
policy (:func:`cleo_dask.schedules.misfire.plan`) decide, commits the decisions to the store in one
transaction (compare-and-set per schedule, lease checked) and only then hands the runs to the
``submit`` function (a small thread pool, so a slow submission does not delay the next firing).
The clock and the submit function are passed in, so the arithmetic is testable with a fixed time.

With ``lookahead > 0`` firings are *pre-staged* (:mod:`cleo_dask.schedules.prestage`): decided up to
``lookahead`` seconds before they are due and handed over in one batch per tick
(``submit_many``), the submit function making the cluster hold each run until its due time.

A persistent store is shared with other processes (``cleo-dask schedule add/pause/...``): the loop
notices their commits (SQLite's ``data_version``) and reloads.  Only the process holding the
store's lease fires; the others stand by and retry.
"""
from __future__ import annotations

import heapq
import html
import itertools
import json
import logging
import pickle
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from cleo_dask import config as _config
from cleo_dask.core.agent import Agent
from cleo_dask.errors import ScheduleError, WorkflowError
from cleo_dask.core.inputs import dump_inputs, load_inputs
from cleo_dask.schedules.misfire import FIRED, MISSED, SKIPPED, Decision, plan
from cleo_dask.util.numbers import count
from cleo_dask.schedules.prestage import Prestaged, decide_at
from cleo_dask.schedules.store import (ACTIVE, CANCELLED, FINISHED, PAUSED, Firing, ScheduleRecord, ScheduleStore,
                              Update)
from cleo_dask.schedules.triggers import (CronTrigger, DateTrigger, IntervalTrigger, Trigger, aware, positive_seconds,
                        trigger_from_state, zone)

logger = logging.getLogger("cleo_dask")

UTC = timezone.utc
#: At most this many past fire times of one schedule are examined per tick (the rest next tick).
MAX_CATCH_UP = 100_000
_STOPPED = (PAUSED, CANCELLED)  # a schedule in these states has its pre-staged runs withdrawn
_UNSET: Any = type("Unset", (), {"__repr__": lambda self: "<config default>"})()


def _setting(name: str, default: Any) -> Any:
    return _config.get(f"schedules.{name}", default)


# -- building schedules (shared by Engine.schedule and the CLI) -----------------------------------------
@dataclass(frozen=True)
class Options:
    """A schedule's policy, validated."""

    misfire_grace: float | None
    coalesce: bool
    max_running: int | None


def make_options(misfire_grace: Any = _UNSET, coalesce: Any = _UNSET, max_running: Any = None) -> Options:
    """Validate the misfire / concurrency policy (``_UNSET``: the ``cleo_dask.schedules`` config)."""
    if misfire_grace is _UNSET:
        misfire_grace = _setting("misfire-grace", 60)
    if misfire_grace is not None:
        misfire_grace = positive_seconds(misfire_grace, "misfire_grace")
    if coalesce is _UNSET:
        coalesce = bool(_setting("coalesce", True))
    if not isinstance(coalesce, bool):
        raise ScheduleError(f"coalesce must be True or False, got {coalesce!r}")
    if max_running is not None:
        count(max_running, "max_running", minimum=1, error=ScheduleError)
    return Options(misfire_grace, coalesce, max_running)


def make_trigger(now: float, *, delay: Any = None, at: Any = None, every: Any = None, cron: Any = None,
                 timezone: Any = None, jitter: Any = 0, start: Any = None,
                 misfire_grace: float | None = None) -> tuple[Trigger, str]:
    """The trigger for exactly one of ``delay`` / ``at`` / ``every`` / ``cron``, and its time zone name."""
    given = [k for k, v in (("delay", delay), ("at", at), ("every", every), ("cron", cron)) if v is not None]
    if len(given) != 1:
        raise ScheduleError("give exactly one of delay=, at=, every=, cron=" +
                            (f" (got {', '.join(given)})" if given else " (got none)"))
    tz = zone(timezone) if timezone is not None else None
    if jitter and every is None:
        raise ScheduleError("jitter= applies to every= schedules only")
    if start is not None and every is None and cron is None:
        raise ScheduleError("start= applies to every= and cron= schedules only")
    now_dt = datetime.fromtimestamp(now, UTC)
    if delay is not None:
        seconds = positive_seconds(delay, "delay")
        return DateTrigger(now_dt + timedelta(seconds=seconds)), (tz.key if tz else "UTC")
    if at is not None:
        when = aware(at, "at")
        late = now - when.timestamp()
        if late > 0 and (misfire_grace is not None and late > misfire_grace):
            raise ScheduleError(f"at={when.isoformat()} is {late:.1f} s in the past, beyond misfire_grace="
                                f"{misfire_grace:g} s (raise misfire_grace to run it anyway)")
        return DateTrigger(when), (tz.key if tz else _tz_name(when))
    begin = aware(start, "start") if start is not None else None
    if every is not None:
        interval = positive_seconds(every, "every", allow_zero=False)
        first = begin or now_dt + timedelta(seconds=interval)
        return IntervalTrigger(interval, first, jitter=positive_seconds(jitter, "jitter")), (tz.key if tz else "UTC")
    tzname = tz.key if tz else "UTC"
    after = (begin or now_dt) - timedelta(microseconds=1) if begin else now_dt
    trigger = CronTrigger(cron, tzname, after=after)
    trigger.check_fires()
    return trigger, tzname


def _tz_name(dt: datetime) -> str:
    key = getattr(dt.tzinfo, "key", None)
    return key if key else "UTC"


def import_path_of(target: Any) -> str | None:
    """The ``"module:name"`` that imports back to ``target`` (``None`` if there is none)."""
    from cleo_dask.util.imports import resolve

    if isinstance(target, str):
        return target
    fn = getattr(getattr(target, "spec", None), "fn", None) or target
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    path = f"{module}:{qualname}"
    try:
        found = resolve(path, error=ScheduleError)
    except ScheduleError:
        return None
    return path if found is target or getattr(found, "spec", None) is getattr(target, "spec", object()) else None


def target_label(target: Any) -> str:
    """A short name for a target (its import path, workflow or task name)."""
    if isinstance(target, str):
        return target
    name = getattr(target, "name", None) or getattr(getattr(target, "spec", None), "name", None)
    return str(name or getattr(target, "__name__", type(target).__name__))


def dump_agent(agent: Any) -> tuple[bytes, str]:
    """Serialize an agent for a persistent store: JSON for a plain :class:`Agent`, else pickle by reference."""
    if isinstance(agent, Agent):
        try:
            return json.dumps({"id": agent.id, "config": agent.config,
                               "max_concurrency": agent.max_concurrency}).encode(), "json"
        except (TypeError, ValueError):
            pass
    cls = type(agent)
    if cls.__module__ == "__main__":
        raise ScheduleError(f"agent {getattr(agent, 'id', agent)!r} is an instance of {cls.__qualname__!r} defined in "
                            "__main__ (a notebook or script): a persistent store can keep only agents whose class "
                            "can be imported by another process; define it in a module or use a cd.Agent")
    try:
        data = pickle.dumps(agent)
        pickle.loads(data)
    except Exception as exc:  # noqa: BLE001 - any pickling failure is the same user error
        raise ScheduleError(f"agent {getattr(agent, 'id', agent)!r} cannot be kept in a persistent store: it does "
                            f"not pickle ({exc})") from exc
    return data, "pickle"


def load_agent(data: bytes | None, fmt: str | None) -> Any:
    """The agent :func:`dump_agent` stored (a default agent if none)."""
    if data is None:
        return Agent("default")
    if fmt == "json":
        d = json.loads(data)
        return Agent(d["id"], config=d.get("config") or {}, max_concurrency=d.get("max_concurrency"))
    from cleo_dask.durable.unpickle import loads  # also an agent pickled by the flat module layout
    return loads(data, where="a schedule store's agent", schema="schedule store schema 1")


def agent_from_file(path: str) -> Agent:
    """An :class:`Agent` from a YAML or JSON file (``id``, ``config``, ``max_concurrency``), read as
    ``cleo-dask run --agent-file`` reads it; a :class:`ScheduleError` listing its problems."""
    from cleo_dask.core.spec import load_agent
    try:
        return load_agent(path)
    except WorkflowError as exc:
        raise ScheduleError(str(exc)) from None


def new_record(store: ScheduleStore, target: Any, agent: Any, trigger: Trigger, tzname: str, options: Options, *,
               name: str | None, now: float, inputs: dict[str, Any] | None = None) -> ScheduleRecord:
    """Validate persistence rules and build the record of a new schedule (not yet stored);
    ``inputs``: the workflow parameters' values of its runs (already checked against them)."""
    if store.persistent:
        path = import_path_of(target)
        if path is None:
            raise ScheduleError(
                f"cannot keep {target_label(target)!r} in the persistent store {store.path}: only import paths "
                "('package.module:name') can be stored, and this target is an object defined in a notebook, a "
                "script (__main__) or a closure, which another process cannot import. Move it into a module and "
                "pass its import path, or use an Engine without store= (schedules then live while the engine does)")
        agent_data, agent_format = dump_agent(agent)
        target_text = path
    else:
        agent_data, agent_format, target_text = None, None, target_label(target)
    first = trigger.next()
    return ScheduleRecord(
        id=uuid.uuid4().hex[:12], name=name or target_label(target), target=target_text, trigger=trigger.state(),
        next_fire=None if first is None else first.timestamp(), state=ACTIVE if first is not None else FINISHED,
        misfire_grace=options.misfire_grace, coalesce=options.coalesce, max_running=options.max_running,
        timezone=tzname, created=now, version=0, agent=agent_data, agent_format=agent_format,
        inputs=dump_inputs(inputs, store.persistent))


def resume_record(store: ScheduleStore, key: str, now: float) -> ScheduleRecord:
    """Resume a paused schedule: the fire times that fell due while it was paused are skipped (one row)."""
    rec = store.get(key)
    if rec is None:
        raise ScheduleError(f"no schedule {key!r}")
    if rec.state != PAUSED:
        if rec.state == ACTIVE:
            return rec
        raise ScheduleError(f"schedule {rec.id} is {rec.state}: only a paused schedule can be resumed")
    trig = trigger_from_state(rec.trigger)
    nxt, skipped = rec.next_fire, []
    while nxt is not None and nxt < now and len(skipped) < MAX_CATCH_UP:
        skipped.append(nxt)
        t = trig.next()
        nxt = None if t is None else t.timestamp()
    firing = None
    if skipped:
        firing = Firing(rec.id, skipped[0], SKIPPED, "due while the schedule was paused", len(skipped),
                        skipped[-1] if len(skipped) > 1 else None, decided=now)
    return store.set_state(rec.id, ACTIVE if nxt is not None else FINISHED, trigger=trig.state(), next_fire=nxt,
                           firing=firing)


def cancel_record(store: ScheduleStore, key: str) -> ScheduleRecord:
    """Cancel a schedule for good (its history stays)."""
    rec = store.get(key)
    if rec is None:
        raise ScheduleError(f"no schedule {key!r}")
    return store.set_state(rec.id, CANCELLED, trigger=rec.trigger, next_fire=None)


def pause_record(store: ScheduleStore, key: str) -> ScheduleRecord:
    """Pause a schedule (no firing until resumed)."""
    rec = store.get(key)
    if rec is None:
        raise ScheduleError(f"no schedule {key!r}")
    if rec.state not in (ACTIVE, PAUSED):
        raise ScheduleError(f"schedule {rec.id} is {rec.state}: it cannot be paused")
    return store.set_state(rec.id, PAUSED)


# -- the loop -----------------------------------------------------------------------------------------------
@dataclass
class _Entry:
    record: ScheduleRecord
    trigger: Trigger
    target: Any = None
    agent: Any = None
    inputs: dict[str, Any] | None = None   # in memory (also values a store cannot keep as JSON)
    runs: deque = field(default_factory=lambda: deque(maxlen=int(_setting("keep-runs", 100))))
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
        self._lease_ttl = float(lease_ttl if lease_ttl is not None else _setting("lease-ttl", 30))
        self._poll = float(_setting("poll-interval", 0.5))
        self._lease_at = 0.0
        self._changes = -1
        self.leader = not store.persistent
        self.lease_error: str | None = None
        if store.persistent:
            self._try_lease()
            if require_lease and not self.leader:
                raise ScheduleError(f"refusing to serve {store.path}: {self.lease_error}")
        self._reload()
        threads = int(submit_threads if submit_threads is not None else _setting("submit-threads", 8))
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
        rec = self.store.get(key)
        if rec is None:
            raise ScheduleError(f"no schedule {key!r}")
        return Schedule(self, rec.id)

    def _apply(self, rec: ScheduleRecord) -> None:
        with self._cv:
            e = self._entries.get(rec.id)
            if e is None:
                e = self._entries[rec.id] = _Entry(rec, trigger_from_state(rec.trigger))
            e.record, e.trigger = rec, trigger_from_state(rec.trigger)
            self._push(e)
            self._cv.notify_all()
        if rec.state in _STOPPED:
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
                    elif e.record.state not in _STOPPED and rec.state in _STOPPED:
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
        run, outcome, reason = None, None, None
        grace = e.record.misfire_grace
        late = self._clock() - due_at
        if self._closed:
            outcome, reason = SKIPPED, "the scheduler was closed before the run could be submitted"
        elif grace is not None and late > grace:
            # the submit threads fell behind (an overloaded client): a recorded miss, not an ever-growing delay
            outcome, reason = MISSED, (f"{late:.3f} s late when its turn to be submitted came, beyond "
                                       f"misfire_grace={grace:g} s (submissions fell behind)")
        else:
            try:
                target, agent = self._target_and_agent(e)
                run = self._submit(target, agent, Schedule(self, e.record.id, e), due_at)
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

    def _refusal(self, e: _Entry, due_at: float, now: float) -> tuple[str | None, str | None]:
        """Why a decided firing is not handed over after all (``(None, None)``: it is)."""
        grace = e.record.misfire_grace
        if self._closed:
            return SKIPPED, "the scheduler was closed before the run could be submitted"
        if grace is not None and now - due_at > grace:
            # the submit threads fell behind (an overloaded client): a recorded miss, not an ever-growing delay
            return MISSED, (f"{now - due_at:.3f} s late when its turn to be submitted came, beyond "
                            f"misfire_grace={grace:g} s (submissions fell behind)")
        if e.record.state in _STOPPED and due_at > now:
            return SKIPPED, f"the schedule was {e.record.state} before its run was handed over"
        return None, None

    def _submit_batch(self, items: list[tuple[_Entry, float, int | None]]) -> list[Any]:
        """Submit the runs of ``items``: a run or the exception that prevented it, for each."""
        calls, out = [], []
        for e, due_at, _ in items:
            try:
                target, agent = self._target_and_agent(e)
                calls.append((target, agent, Schedule(self, e.record.id, e), due_at))
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
                        if e.record.state in _STOPPED or self._closed:  # paused meanwhile: withdraw it now
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

    # -- helpers for the handle -------------------------------------------------------------------
    def _entry(self, sid: str) -> _Entry | None:
        with self._cv:
            return self._entries.get(sid)

    def _target_and_agent(self, e: _Entry) -> tuple[Any, Any]:
        if e.target is None:
            from cleo_dask.util.imports import resolve
            e.target = resolve(e.record.target, error=ScheduleError)
        if e.agent is None:
            e.agent = load_agent(e.record.agent, e.record.agent_format)
        return e.target, e.agent


class Schedule:
    """A handle on one schedule: returned by :meth:`Engine.schedule`, listed by :meth:`Engine.schedules`."""

    def __init__(self, scheduler: Scheduler, schedule_id: str, entry: _Entry | None = None):
        self._scheduler = scheduler
        self.id = schedule_id
        self._e = entry

    @property
    def _record(self) -> ScheduleRecord:
        e = self._scheduler._entry(self.id)
        if e is not None:
            return e.record
        rec = self._scheduler.store.get(self.id)
        if rec is None:
            raise ScheduleError(f"no schedule {self.id!r}")
        return rec

    @property
    def name(self) -> str:
        """The schedule's name (default: its target's)."""
        return self._record.name

    @property
    def target(self) -> str:
        """The target: its import path, or its name for an in-memory object."""
        return self._record.target

    @property
    def trigger(self) -> str:
        """When it fires, in words ("every 5s", "cron '0 2 * * *' UTC", "at ...")."""
        return trigger_from_state(self._record.trigger).describe()

    @property
    def state(self) -> str:
        """``"active"``, ``"paused"``, ``"finished"`` (no more fire times) or ``"cancelled"``."""
        return self._record.state

    @property
    def inputs(self) -> dict[str, Any]:
        """The workflow parameters' values each of its runs is submitted with."""
        e = self._scheduler._entry(self.id)
        if e is not None and e.inputs is not None:
            return dict(e.inputs)
        return load_inputs(self._record.inputs)

    @property
    def next_fire_time(self) -> datetime | None:
        """When it fires next (aware, in the schedule's time zone); ``None`` if paused or ended."""
        rec = self._record
        if rec.state != ACTIVE or rec.next_fire is None:
            return None
        return datetime.fromtimestamp(rec.next_fire, ZoneInfo(rec.timezone))

    def pause(self) -> None:
        """Stop firing until :meth:`resume`."""
        self._scheduler._apply(pause_record(self._scheduler.store, self.id))

    def resume(self) -> None:
        """Fire again; the fire times that passed while paused are skipped (and recorded so)."""
        self._scheduler._apply(resume_record(self._scheduler.store, self.id, self._scheduler._clock()))

    def cancel(self) -> None:
        """Stop for good; runs already started go on, the history stays."""
        self._scheduler._apply(cancel_record(self._scheduler.store, self.id))

    def runs(self) -> list[Any]:
        """The :class:`Run` objects this schedule started in this process, oldest first (runs handed
        over ahead of their due time included; withdrawn ones, when paused or cancelled, removed)."""
        e = self._scheduler._entry(self.id)
        if e is None:
            return []
        with self._scheduler._cv:
            return list(e.runs)

    def firings(self, limit: int | None = None) -> list[Firing]:
        """The recorded decisions (fired / missed / skipped, with reasons and lateness), oldest first."""
        self._scheduler.flush()
        return self._scheduler.store.firings(self.id, limit=limit)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and other.id == self.id and other._scheduler is self._scheduler

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        rec = self._record
        nxt = self.next_fire_time
        return (f"<cleo_dask.Schedule {rec.id} {rec.name!r} {trigger_from_state(rec.trigger).describe()} "
                f"state={rec.state} next={nxt.isoformat() if nxt else None}>")

    def _repr_html_(self) -> str:
        rec = self._record
        nxt = self.next_fire_time
        return (f"<div><strong>cleo_dask Schedule</strong> <code>{html.escape(rec.id)}</code> "
                f"({html.escape(rec.name)})<br>{html.escape(trigger_from_state(rec.trigger).describe())}; "
                f"state: <b>{rec.state}</b>; next: {html.escape(nxt.isoformat() if nxt else '-')}; "
                f"runs here: {len(self.runs())}</div>")


def due_label(due: float, tzname: str = "UTC") -> str:
    """A due time (epoch seconds) as ISO text in ``tzname``."""
    return datetime.fromtimestamp(due, ZoneInfo(tzname)).isoformat(timespec="milliseconds")
