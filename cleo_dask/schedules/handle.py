"""The :class:`Schedule` handle a user holds: reads its schedule's record, pauses, resumes, cancels,
lists its runs and firings, all through the loop that fires it (:class:`Fires`)."""
from __future__ import annotations

import html
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from cleo_dask.schedules.records import ACTIVE, Firing, ScheduleRecord
from cleo_dask.schedules.triggers import trigger_from_state


class Fires(Protocol):
    """What a handle needs of the loop firing its schedule (:class:`~cleo_dask.schedules.loop.Scheduler`)."""

    def record(self, schedule_id: str) -> ScheduleRecord: ...
    def inputs_of(self, schedule_id: str) -> dict[str, Any]: ...
    def runs_of(self, schedule_id: str) -> list[Any]: ...
    def pause(self, schedule_id: str) -> None: ...
    def resume(self, schedule_id: str) -> None: ...
    def cancel(self, schedule_id: str) -> None: ...
    def firings(self, schedule_id: str, limit: int | None = None) -> list[Firing]: ...


class Schedule:
    """A handle on one schedule: returned by :meth:`Engine.schedule`, listed by :meth:`Engine.schedules`."""

    def __init__(self, scheduler: Fires, schedule_id: str):
        self._scheduler = scheduler
        self.id = schedule_id

    @property
    def _record(self) -> ScheduleRecord:
        return self._scheduler.record(self.id)

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
        return self._scheduler.inputs_of(self.id)

    @property
    def next_fire_time(self) -> datetime | None:
        """When it fires next (aware, in the schedule's time zone); ``None`` if paused or ended."""
        rec = self._record
        if rec.state != ACTIVE or rec.next_fire is None:
            return None
        return datetime.fromtimestamp(rec.next_fire, ZoneInfo(rec.timezone))

    def pause(self) -> None:
        """Stop firing until :meth:`resume`."""
        self._scheduler.pause(self.id)

    def resume(self) -> None:
        """Fire again; the fire times that passed while paused are skipped (and recorded so)."""
        self._scheduler.resume(self.id)

    def cancel(self) -> None:
        """Stop for good; runs already started go on, the history stays."""
        self._scheduler.cancel(self.id)

    def runs(self) -> list[Any]:
        """The :class:`Run` objects this schedule started in this process, oldest first (runs handed
        over ahead of their due time included; withdrawn ones, when paused or cancelled, removed)."""
        return self._scheduler.runs_of(self.id)

    def firings(self, limit: int | None = None) -> list[Firing]:
        """The recorded decisions (fired / missed / skipped, with reasons and lateness), oldest first."""
        return self._scheduler.firings(self.id, limit=limit)

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
