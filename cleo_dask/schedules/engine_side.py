"""What the schedules need from an engine, as one small object: validating a new schedule's
target against the engine, creating the loop that fires the engine's runs, submitting the runs of
a tick's firings (held by the cluster until due when it can hold them) and withdrawing them.

The engine builds it with the few callables it lends (prepare and launch a run, send an event,
a target as a workflow); the loop only calls this object's public methods, never the engine's.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from cleo_dask import config as _config
from cleo_dask.core.agent import Agent, check_picklable
from cleo_dask.errors import CleoError, ScheduleError
from cleo_dask.schedules.build import make_options, make_trigger, new_record
from cleo_dask.schedules.handle import Schedule
from cleo_dask.schedules.loop import Scheduler
from cleo_dask.schedules.settings import UNSET
from cleo_dask.schedules.store import ScheduleStore

logger = logging.getLogger("cleo_dask")

#: ``(target, agent, schedule, due)``: one firing's run to submit
Item = tuple[Any, Any, Any, float]
#: a :class:`cleo_dask.runs.run.Run`: this module needs only its ``id``, ``cancel()`` and root keys
RunLike = Any


class ScheduledRuns:
    """An engine's schedules side: ``prepare(target, agent, **submit_kwargs) -> (run, compiled)``
    validates and compiles one run, ``launch(prepared) -> runs`` sends a batch of them,
    ``send_event(topic, msg)`` logs an event on the scheduler, ``as_workflow(target)`` is the
    engine's view of a target as a workflow."""

    def __init__(self, client: Any, *, prepare: Callable[..., tuple[RunLike, Any]],
                 launch: Callable[[list[tuple[RunLike, Any]]], list[RunLike]], send_event: Callable[[str, Any], Any],
                 as_workflow: Callable[[Any], Any]):
        self.client = client
        self._prepare = prepare
        self._launch = launch
        self._send_event = send_event
        self._as_workflow = as_workflow
        #: runs are submitted ahead of their due time, held by the cluster until then
        self.prestage = False

    def new_scheduler(self, store: ScheduleStore, **kwargs: Any) -> Scheduler:
        """The scheduling loop of ``store`` firing the engine's runs (pre-staged when the cluster can hold them)."""
        self.prestage = self.can_hold_runs()
        lookahead = float(_config.get("schedules.lookahead", 1.0) or 0.0) if self.prestage else 0.0
        return Scheduler(store, self.submit, submit_many=self.submit_many, withdraw=self.withdraw,
                         lookahead=lookahead, **kwargs)

    def can_hold_runs(self) -> bool:
        """Whether the cluster's scheduler can hold runs until a not-before time (the admission plugin)."""
        from cleo_dask.admission.plugin import ensure_installed
        try:
            ensure_installed(self.client)
            return True
        except CleoError as exc:
            logger.warning("schedules: runs are submitted at their due time, not ahead of it: %s", exc)
            return False

    def schedule(self, scheduler: Scheduler, target: Any, agent: Any = None, *, delay: Any = None, at: Any = None,
                 every: Any = None, cron: str | None = None, timezone: Any = None, jitter: Any = 0,
                 misfire_grace: Any = ..., coalesce: Any = ..., max_running: int | None = None,
                 name: str | None = None, start: Any = None, inputs: Mapping[str, Any] | None = None) -> Schedule:
        """:meth:`Engine.schedule` (``...``: the config's default) on ``scheduler``."""
        from cleo_dask.core.inputs import check_schedule_inputs
        options = make_options(UNSET if misfire_grace is ... else misfire_grace,
                               UNSET if coalesce is ... else coalesce, max_running)
        now = scheduler.now()
        trigger, tzname = make_trigger(now, delay=delay, at=at, every=every, cron=cron, timezone=timezone,
                                       jitter=jitter, start=start, misfire_grace=options.misfire_grace)
        if isinstance(target, str):
            from cleo_dask.util.imports import resolve
            resolved = resolve(target, error=ScheduleError)
        else:
            resolved = target
        wf = self._as_workflow(resolved)
        wf.validate()
        inputs = check_schedule_inputs(wf, inputs)
        if agent is None:
            agent = Agent("default")
        check_picklable(agent)
        record = new_record(scheduler.store, target, agent, trigger, tzname, options, name=name, now=now,
                            inputs=inputs)
        return scheduler.add(record, resolved, agent, inputs=inputs)

    def submit(self, target: Any, agent: Any, schedule: Any, due: float) -> Any:
        """Submit one firing's run (see :meth:`submit_many`)."""
        return self.submit_many([(target, agent, schedule, due)])[0]

    def submit_many(self, items: list[Item]) -> list[Any]:
        """Submit the runs of a tick's firings in one go: a run, or the exception that stopped it, each.

        With the admission plugin, each run is held until its due time (``not_before``) and the
        plugin reports the lateness of its release to the ``cleo_schedule_lateness_seconds``
        metric; without it the lateness of the hand-off is sent instead."""
        out: list[Any] = []
        prepared: list[tuple[RunLike, Any]] = []
        checked: set[int] = set()
        for target, agent, schedule, due in items:
            when = datetime.fromtimestamp(due, timezone.utc).isoformat(timespec="seconds")
            try:
                prepared.append(self._prepare(target, agent, name=f"{schedule.name} @ {when}", checked=checked,
                                              inputs=schedule.inputs, not_before=due if self.prestage else None))
                out.append(None)
            except Exception as exc:  # noqa: BLE001 - this firing is recorded as skipped, the others go on
                out.append(exc)
        runs = iter(self._launch(prepared))
        out = [next(runs) if o is None else o for o in out]
        if not self.prestage:
            now = time.time()
            for (_, _, _, due), run in zip(items, out):
                if not isinstance(run, BaseException):  # a run (the others: why it was not submitted)
                    # the monitor plugin turns this event into the cleo_schedule_lateness_seconds histogram
                    self._send_event("cleo-schedules", {"kind": "lateness", "run": run.id, "seconds": max(0.0, now - due)})
        return out

    def withdraw(self, runs: list[RunLike]) -> list[bool]:
        """Cancel the pre-staged ``runs`` the cluster has not released yet; True for each one cancelled."""
        from cleo_dask.admission.plugin import withdraw
        roots = {run.id: run.root_keys() for run in runs}
        gone = set(withdraw(self.client, [k for keys in roots.values() for k in keys]))
        out = []
        for run in runs:
            withdrawn = any(k in gone for k in roots[run.id])
            if withdrawn:
                run.cancel()
            out.append(withdrawn)
        return out
