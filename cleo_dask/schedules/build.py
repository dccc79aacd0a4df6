"""Building a new schedule (shared by :meth:`Engine.schedule` and ``cleo-dask schedule add``):
the policy validated, the trigger for ``delay`` / ``at`` / ``every`` / ``cron``, and the record
to store, checked against the persistence rules."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from cleo_dask.core.inputs import dump_inputs
from cleo_dask.errors import ScheduleError
from cleo_dask.schedules.agents import agent_to_bytes
from cleo_dask.schedules.records import ACTIVE, FINISHED, Options, ScheduleRecord
from cleo_dask.schedules.settings import UNSET, setting
from cleo_dask.schedules.store import ScheduleStore
from cleo_dask.schedules.triggers import CronTrigger, DateTrigger, IntervalTrigger, Trigger, aware, positive_seconds, zone
from cleo_dask.util.numbers import count

UTC = timezone.utc


def make_options(misfire_grace: Any = UNSET, coalesce: Any = UNSET, max_running: Any = None) -> Options:
    """Validate the misfire / concurrency policy (``UNSET``: the ``cleo_dask.schedules`` config)."""
    if misfire_grace is UNSET:
        misfire_grace = setting("misfire-grace", 60)
    if misfire_grace is not None:
        misfire_grace = positive_seconds(misfire_grace, "misfire_grace")
    if coalesce is UNSET:
        coalesce = bool(setting("coalesce", True))
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


def new_record(store: ScheduleStore, target: Any, agent: Any, trigger: Trigger, tzname: str, options: Options,
               *, name: str | None, now: float, inputs: dict[str, Any] | None = None) -> ScheduleRecord:
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
        agent_data, agent_format = agent_to_bytes(agent)
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
