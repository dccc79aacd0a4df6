"""Changing a stored schedule's state: pause, resume (skipping what fell due meanwhile), cancel.

Shared by the :class:`~cleo_dask.schedules.handle.Schedule` handle (through the loop) and by
``cleo-dask schedule pause|resume|remove``, which edit the store while a ``serve`` may run."""
from __future__ import annotations

from cleo_dask.errors import ScheduleError
from cleo_dask.schedules.records import ACTIVE, CANCELLED, FINISHED, PAUSED, SKIPPED, Firing, ScheduleRecord
from cleo_dask.schedules.settings import MAX_CATCH_UP
from cleo_dask.schedules.store import ScheduleStore
from cleo_dask.schedules.triggers import trigger_from_state


def _existing(store: ScheduleStore, key: str) -> ScheduleRecord:
    rec = store.get(key)
    if rec is None:
        raise ScheduleError(f"no schedule {key!r}")
    return rec


def resume_record(store: ScheduleStore, key: str, now: float) -> ScheduleRecord:
    """Resume a paused schedule: the fire times that fell due while it was paused are skipped (one row)."""
    rec = _existing(store, key)
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
    rec = _existing(store, key)
    return store.set_state(rec.id, CANCELLED, trigger=rec.trigger, next_fire=None)


def pause_record(store: ScheduleStore, key: str) -> ScheduleRecord:
    """Pause a schedule (no firing until resumed)."""
    rec = _existing(store, key)
    if rec.state not in (ACTIVE, PAUSED):
        raise ScheduleError(f"schedule {rec.id} is {rec.state}: it cannot be paused")
    return store.set_state(rec.id, PAUSED)
