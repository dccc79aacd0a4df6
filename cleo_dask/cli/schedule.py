"""``cleo-dask schedule add|list|pause|resume|remove|history``: the schedules kept in a store.

The schedule commands edit the store directly (a SQLite file); a running ``cleo-dask serve`` on
that file picks the change up within ``cleo_dask.schedules.poll-interval`` seconds.
Exit codes: 0 success, 2 bad input (invalid schedule, unknown id, unusable store).
"""
from __future__ import annotations

import argparse
import json
import re
import time
from datetime import datetime
from typing import Any

from cleo_dask.cli.common import fail, importable_cwd, input_args, inputs_from_args
from cleo_dask.cli.types import count_type
from cleo_dask.errors import CleoError, ScheduleError


def register(sub: Any) -> None:
    """Add ``schedule`` to the ``cleo-dask`` parser."""
    p = sub.add_parser("schedule", help="add, list, pause, resume or remove schedules in a store")
    ssub = p.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)

    a = ssub.add_parser("add", help="add a schedule for an import path",
                        description="Add a schedule. Exactly one of --cron, --every, --at, --delay.")
    a.add_argument("target", help="package.module:name of a task or workflow")
    when = a.add_mutually_exclusive_group()
    when.add_argument("--cron", help='a cron expression, e.g. "0 2 * * *" (in --timezone)')
    when.add_argument("--every", help="an interval: seconds, or 30s / 5m / 2h / 1d / 1h30m")
    when.add_argument("--at", help="an ISO 8601 time with offset, e.g. 2026-12-01T09:00:00+01:00")
    when.add_argument("--delay", help="once, after this long (same format as --every)")
    a.add_argument("--timezone", help="IANA time zone for --cron (and for an --at without offset); default UTC")
    a.add_argument("--jitter", default="0", help="random extra delay of up to this long (--every only)")
    a.add_argument("--start", help="first fire time for --every / earliest for --cron (ISO 8601)")
    a.add_argument("--misfire-grace", help="seconds a firing may be late and still run ('none': no limit)")
    a.add_argument("--no-coalesce", action="store_true", help="run each late firing (default: run once)")
    a.add_argument("--max-running", type=count_type(1), help="skip a firing while this many runs are still running")
    a.add_argument("--agent-file", help='YAML or JSON file: id, config (a mapping), max_concurrency')
    input_args(a)
    a.add_argument("--name", help="a name for the schedule (default: the target)")
    a.add_argument("--store", required=True)
    a.set_defaults(func=cmd_add)

    ls = ssub.add_parser("list", help="list schedules")
    ls.add_argument("--store", required=True)
    ls.add_argument("--all", action="store_true", help="also finished and cancelled schedules")
    ls.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    ls.set_defaults(func=cmd_list)

    for action, helptext in (("pause", "pause a schedule"), ("resume", "resume a paused schedule"),
                             ("remove", "cancel a schedule (its history stays)")):
        c = ssub.add_parser(action, help=helptext)
        c.add_argument("schedule", help="schedule id (or unique name)")
        c.add_argument("--store", required=True)
        c.set_defaults(func=cmd_change, action=action)

    h = ssub.add_parser("history", help="the firings of a schedule (fired, missed, skipped)")
    h.add_argument("schedule", help="schedule id (or unique name)")
    h.add_argument("--store", required=True)
    h.add_argument("--limit", type=count_type(0), default=50)
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=cmd_history)


# -- commands -----------------------------------------------------------------------------------------
def cmd_add(args: argparse.Namespace) -> int:
    """``cleo-dask schedule add``."""
    from cleo_dask.schedules.agents import agent_from_file
    from cleo_dask.schedules.build import make_options, make_trigger, new_record

    importable_cwd()
    try:
        policy: dict[str, Any] = {"max_running": args.max_running}   # what is not given: from the config
        if args.misfire_grace is not None:
            policy["misfire_grace"] = (None if args.misfire_grace.lower() == "none"
                                       else _seconds(args.misfire_grace, "--misfire-grace"))
        if args.no_coalesce:
            policy["coalesce"] = False
        options = make_options(**policy)
        tz = args.timezone
        now = time.time()
        trigger, tzname = make_trigger(
            now, delay=_duration(args.delay, "--delay"), at=_when(args.at, tz, "--at"),
            every=_duration(args.every, "--every", positive=True), cron=args.cron, timezone=tz,
            jitter=_duration(args.jitter, "--jitter") or 0, start=_when(args.start, tz, "--start"),
            misfire_grace=options.misfire_grace)
        inputs = inputs_from_args(args, error=ScheduleError)
        target, inputs = _check_target(args.target, inputs)
        from cleo_dask.core.agent import Agent
        agent = agent_from_file(args.agent_file) if args.agent_file else Agent("default")
        with _store(args.store) as store:
            rec = new_record(store, args.target, agent, trigger, tzname, options, name=args.name, now=now,
                             inputs=inputs)
            store.add(rec)
    except CleoError as exc:
        return fail(str(exc))
    nxt = _fmt(rec.next_fire, rec.timezone)
    print(f"{rec.id}\t{rec.name}\t{target}\tnext {nxt}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """``cleo-dask schedule list``."""
    from cleo_dask.core.inputs import load_inputs
    from cleo_dask.schedules.triggers import trigger_from_state
    try:
        with _store(args.store, must_exist=True) as store:
            records = store.all(include_ended=args.all)
            counts = store.outcome_counts()
    except CleoError as exc:
        return fail(str(exc))
    rows = []
    for r in records:
        c = counts.get(r.id, {})
        rows.append({"id": r.id, "name": r.name, "target": r.target, "trigger": trigger_from_state(r.trigger).describe(),
                     "state": r.state, "next": _fmt(r.next_fire, r.timezone) if r.state == "active" else "-",
                     "fired": c.get("fired", 0), "missed": c.get("missed", 0), "skipped": c.get("skipped", 0),
                     "inputs": load_inputs(r.inputs)})
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    cols = ["id", "name", "trigger", "state", "next", "fired", "missed", "skipped"]
    _table(rows, cols)
    return 0


def cmd_change(args: argparse.Namespace) -> int:
    """``cleo-dask schedule pause|resume|remove``."""
    from cleo_dask.schedules.changes import cancel_record, pause_record, resume_record
    try:
        with _store(args.store, must_exist=True) as store:
            if args.action == "pause":
                rec = pause_record(store, args.schedule)
            elif args.action == "resume":
                rec = resume_record(store, args.schedule, time.time())
            else:
                rec = cancel_record(store, args.schedule)
    except CleoError as exc:
        return fail(str(exc))
    print(f"{rec.id}\t{rec.name}\t{rec.state}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """``cleo-dask schedule history``."""
    try:
        with _store(args.store, must_exist=True) as store:
            rec = store.get(args.schedule)
            if rec is None:
                raise ScheduleError(f"no schedule {args.schedule!r} in {args.store}")
            firings = store.firings(rec.id, limit=args.limit)
    except CleoError as exc:
        return fail(str(exc))
    rows = [{"due": _fmt(f.due, rec.timezone, "milliseconds"), "outcome": f.outcome, "count": f.count,
             "lateness_ms": None if f.lateness is None else round(f.lateness * 1000, 1), "run": f.run_id or "",
             "reason": f.reason or ""} for f in firings]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    _table(rows, ["due", "outcome", "count", "lateness_ms", "run", "reason"])
    return 0


# -- helpers -----------------------------------------------------------------------------------------
class _store:
    def __init__(self, path: str, must_exist: bool = False):
        import os
        if must_exist and not os.path.exists(path):
            raise ScheduleError(f"no store at {path}")
        self.path = path

    def __enter__(self) -> Any:
        from cleo_dask.schedules.store import ScheduleStore
        self.store = ScheduleStore(self.path)
        return self.store

    def __exit__(self, *exc: Any) -> None:
        self.store.close()


def _check_target(path: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A label for the target at ``path``, and ``inputs`` checked against its parameters."""
    from cleo_dask.util.imports import resolve
    from cleo_dask.core.inputs import check_schedule_inputs
    from cleo_dask.core.task import as_spec
    from cleo_dask.core.workflow import Workflow
    obj = resolve(path, error=ScheduleError)
    if isinstance(obj, Workflow):
        obj.validate()
        return f"workflow {obj.name!r}", check_schedule_inputs(obj, inputs)
    spec = as_spec(obj)
    wf = Workflow(spec.name)
    wf.add(spec)
    return f"task {spec.name!r}", check_schedule_inputs(wf, inputs)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str | None, what: str, positive: bool = False) -> float | None:
    if text is None:
        return None
    from cleo_dask.util.numbers import seconds
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text)
        if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
            raise ScheduleError(f"{what} {text!r}: use seconds or a duration like 30s, 5m, 2h, 1d, 1h30m") from None
        value = sum(float(n) * _UNITS[u] for n, u in parts)
    return seconds(value, what, positive=positive, error=ScheduleError)  # not inf, nan, < 0, past 100 years


def _seconds(text: str, what: str) -> float:
    value = _duration(text, what)
    assert value is not None
    return value


def _when(text: str | None, tz: str | None, what: str) -> datetime | None:
    if text is None:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ScheduleError(f"{what} {text!r} is not an ISO 8601 time (e.g. 2026-12-01T09:00:00+01:00)") from None
    if dt.tzinfo is None and tz:
        from cleo_dask.schedules.triggers import zone
        dt = dt.replace(tzinfo=zone(tz))
    return dt


def _fmt(t: float | None, tz: str = "UTC", timespec: str = "seconds") -> str:
    if t is None:
        return "-"
    from zoneinfo import ZoneInfo
    return datetime.fromtimestamp(t, ZoneInfo(tz)).isoformat(timespec=timespec)


def _table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols))
