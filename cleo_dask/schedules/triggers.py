"""Triggers: iterators of fire times with a serializable, versioned state.

A trigger answers one question, again and again: :meth:`Trigger.next` is the next fire time (an
aware ``datetime``), or ``None`` when there are no more.  Each call advances it.  Its
:meth:`Trigger.state` is a JSON-able dict (``kind``, ``version`` and the fields needed to go on),
so a store can keep a schedule and a restarted process resume it exactly where it stopped
(:func:`trigger_from_state`).  The design follows APScheduler 4's triggers.

* :class:`DateTrigger`: once (``delay=`` / ``at=``).
* :class:`IntervalTrigger`: every ``interval`` seconds from ``start``, with an optional random
  ``jitter`` (0..jitter seconds added to each nominal time, reproducible from a stored seed).
* :class:`CronTrigger`: a cron expression (croniter) in a time zone (zoneinfo).  Around DST
  transitions it does what croniter does: a time that does not exist (spring forward) fires at
  the first instant after the gap; a time that occurs twice (fall back) fires twice.
"""
from __future__ import annotations

import random
from abc import ABC, abstractmethod
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from cleo_dask.errors import ScheduleError
from cleo_dask.util.numbers import is_real, seconds

UTC = timezone.utc
CRON_FIELDS = ("minute", "hour", "day of month", "month", "day of week", "second", "year")


class Trigger(ABC):
    """An iterator of fire times with a state that can be stored and restored."""

    kind: ClassVar[str]
    version: ClassVar[int] = 1

    @abstractmethod
    def next(self) -> datetime | None:
        """The next fire time (aware), or ``None`` when the trigger is exhausted; advances."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """A JSON-able dict from which :func:`trigger_from_state` rebuilds this trigger."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: dict[str, Any]) -> Trigger:
        """Rebuild a trigger from :meth:`state`."""

    @abstractmethod
    def describe(self) -> str:
        """A short human description ("every 5s", "cron '0 2 * * *' UTC")."""

    def _header(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class DateTrigger(Trigger):
    """Fires once, at ``run_time``."""

    kind = "date"

    def __init__(self, run_time: datetime, *, done: bool = False):
        self.run_time = aware(run_time, "at")
        self.done = done

    def next(self) -> datetime | None:
        if self.done:
            return None
        self.done = True
        return self.run_time

    def state(self) -> dict[str, Any]:
        return {**self._header(), "run_time": self.run_time.isoformat(), "done": self.done}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DateTrigger:
        return cls(datetime.fromisoformat(state["run_time"]), done=bool(state.get("done")))

    def describe(self) -> str:
        return f"at {self.run_time.isoformat()}"


#: The shortest interval of an ``every`` schedule.  Fire times are datetimes (microseconds) and
#: each due time is fired at most once, so a step below a few microseconds repeats one due time;
#: 1 ms (1,000 runs a second) is far beyond what a schedule fires usefully.
MIN_INTERVAL = 0.001


class IntervalTrigger(Trigger):
    """Fires at ``start + n * interval`` (+ a random 0..``jitter`` s), n = 0, 1, 2, ...

    Times are absolute (no drift; intervals are real elapsed seconds, also across DST changes),
    so a restarted process fires on the same grid.
    """

    kind = "interval"

    def __init__(self, interval: float, start: datetime, *, jitter: float = 0.0, seed: int | None = None,
                 index: int = 0, end: datetime | None = None):
        self.interval = positive_seconds(interval, "every", allow_zero=False)
        if self.interval < MIN_INTERVAL:
            raise ScheduleError(f"every must be at least {MIN_INTERVAL:g} seconds (1 ms), got {interval!r}: "
                                "fire times are kept to the microsecond, so shorter steps would repeat one time")
        self.jitter = positive_seconds(jitter, "jitter")
        if self.jitter >= self.interval:
            raise ScheduleError(f"jitter ({self.jitter} s) must be shorter than the interval ({self.interval} s)")
        self.start = aware(start, "start")
        self.end = aware(end, "end") if end is not None else None
        self.seed = random.randrange(2**31) if seed is None else int(seed)
        self.index = int(index)

    def nominal(self, index: int) -> datetime:
        """The fire time of firing ``index`` before jitter (in ``start``'s time zone).

        Computed in UTC: adding a timedelta to a datetime with a ZoneInfo adds wall-clock time,
        which around a DST change is an hour off the real elapsed time.
        """
        t = self.start.astimezone(UTC) + timedelta(seconds=self.interval * index)
        return t.astimezone(self.start.tzinfo)

    def next(self) -> datetime | None:
        try:
            t = self.nominal(self.index)
        except OverflowError:  # past datetime's year 9999: no more firings
            return None
        if self.jitter:
            extra = timedelta(seconds=random.Random(self.seed * 1_000_003 + self.index).uniform(0, self.jitter))
            t = (t.astimezone(UTC) + extra).astimezone(self.start.tzinfo)
        if self.end is not None and t > self.end:
            return None
        self.index += 1
        return t

    def state(self) -> dict[str, Any]:
        return {**self._header(), "interval": self.interval, "start": self.start.isoformat(), "jitter": self.jitter,
                "seed": self.seed, "index": self.index, "end": self.end.isoformat() if self.end else None}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> IntervalTrigger:
        end = state.get("end")
        return cls(state["interval"], datetime.fromisoformat(state["start"]), jitter=state.get("jitter", 0.0),
                   seed=state["seed"], index=state["index"], end=datetime.fromisoformat(end) if end else None)

    def describe(self) -> str:
        return f"every {self.interval:g}s" + (f" (jitter {self.jitter:g}s)" if self.jitter else "")


class CronTrigger(Trigger):
    """Fires at the times a cron expression matches, in ``timezone``, strictly after ``after``."""

    kind = "cron"

    def __init__(self, expression: str, timezone: str = "UTC", *, after: datetime):
        self.expression = check_cron(expression)
        self.timezone = zone(timezone).key
        self.after = aware(after, "start").astimezone(ZoneInfo(self.timezone))

    def next(self) -> datetime | None:
        try:
            nxt = croniter(self.expression, self.after).get_next(datetime)
        except (CroniterBadDateError, OverflowError):  # no match left (before year 9999)
            return None
        self.after = nxt
        return nxt

    def check_fires(self) -> None:
        """Raise :class:`ScheduleError` if the expression never matches after ``after``
        (``"0 0 31 2 *"``: February has no 31st), so such a schedule is refused when created."""
        if CronTrigger(self.expression, self.timezone, after=self.after).next() is None:
            raise ScheduleError(f"cron expression {self.expression!r} never matches: no date fits all its "
                                "fields (e.g. day 31 of a month that has 30 days)")

    def state(self) -> dict[str, Any]:
        return {**self._header(), "expression": self.expression, "timezone": self.timezone,
                "after": self.after.isoformat()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CronTrigger:
        return cls(state["expression"], state["timezone"], after=datetime.fromisoformat(state["after"]))

    def describe(self) -> str:
        return f"cron '{self.expression}' {self.timezone}"


TRIGGERS: dict[str, type[Trigger]] = {t.kind: t for t in (DateTrigger, IntervalTrigger, CronTrigger)}


def trigger_from_state(state: dict[str, Any]) -> Trigger:
    """Rebuild a stored trigger; a :class:`ScheduleError` for an unknown kind or a newer version."""
    cls = TRIGGERS.get(state.get("kind"))  # type: ignore[arg-type]
    if cls is None:
        raise ScheduleError(f"unknown trigger kind {state.get('kind')!r} in stored schedule")
    if int(state.get("version", 1)) > cls.version:
        raise ScheduleError(f"stored {cls.kind} trigger has version {state.get('version')}, this cleo_dask reads "
                            f"up to {cls.version}: upgrade cleo_dask")
    return cls.from_state(state)


# -- validation helpers ---------------------------------------------------------------------------
def zone(name: Any) -> ZoneInfo:
    """A ``ZoneInfo`` from a name (or a ZoneInfo / ``datetime.timezone.utc``); ScheduleError if unknown."""
    if isinstance(name, ZoneInfo):
        return name
    if name is UTC or name is None:
        return ZoneInfo("UTC")
    if not isinstance(name, str) or not name:
        raise ScheduleError(f"timezone must be an IANA name such as 'Europe/Paris', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r} (use an IANA name such as 'Europe/Paris' or 'UTC')") from None


def aware(dt: Any, what: str) -> datetime:
    """``dt`` if it is a time-zone-aware datetime; a ScheduleError for naive or non-datetimes."""
    if not isinstance(dt, datetime):
        raise ScheduleError(f"{what} must be a datetime, got {dt!r}")
    if dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
        raise ScheduleError(f"{what}={dt.isoformat()} is a naive datetime: give it a tzinfo "
                            f"(e.g. ZoneInfo('Europe/Paris') or datetime.timezone.utc)")
    return dt


def positive_seconds(value: Any, what: str, *, allow_zero: bool = True) -> float:
    """Seconds from a number or ``timedelta``; ScheduleError if negative (or zero when not allowed),
    not finite, or longer than :data:`~cleo_dask.util.numbers.MAX_SECONDS` (100 years)."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if not is_real(value):
        raise ScheduleError(f"{what} must be seconds (a number) or a timedelta, got {value!r}")
    return seconds(value, what, positive=not allow_zero, error=ScheduleError)


def check_cron(expression: Any) -> str:
    """The expression if croniter accepts it, else a ScheduleError naming the offending field."""
    if not isinstance(expression, str) or not expression.strip():
        raise ScheduleError(f"cron expression must be a non-empty string, got {expression!r}")
    expression = " ".join(expression.split())
    if expression.startswith("@"):
        if not croniter.is_valid(expression):
            raise ScheduleError(f"invalid cron expression {expression!r}: unknown alias")
        return expression
    fields = expression.split(" ")
    if len(fields) not in (5, 6):
        raise ScheduleError(f"invalid cron expression {expression!r}: expected 5 fields (minute hour day-of-month "
                            f"month day-of-week), optionally a 6th (second), got {len(fields)}")
    for i, value in enumerate(fields):
        probe = ["*"] * len(fields)
        probe[i] = value
        if not croniter.is_valid(" ".join(probe)):
            raise ScheduleError(f"invalid cron expression {expression!r}: field {i + 1} ({CRON_FIELDS[i]}) "
                                f"{value!r} is not valid")
    if not croniter.is_valid(expression):
        raise ScheduleError(f"invalid cron expression {expression!r}")
    return expression
