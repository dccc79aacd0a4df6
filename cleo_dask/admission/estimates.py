"""Durations the engine knows, handed to the Dask scheduler as its first estimates.

Dask places a ready task on the worker where it expects it to start soonest, from each worker's
*occupancy*: the estimated duration of what it already holds.  It estimates a task's duration
per key prefix (here: per task name) from the tasks of that prefix it has seen finish, and
until then assumes 0.5 s (``distributed.scheduler.unknown-task-duration``).  When a workflow
declares durations (``duration=`` or ``critical_path={node: seconds}``), the engine sets Dask's
estimate of each prefix to their mean just before the graph arrives (Dask's own measurements
then blend in as tasks finish).  On the SoyKB trace this took makespan from 1.050 to 1.038 of
the reference list schedule (3 runs each), where 0.5 s guesses had put critical-path tasks
behind long ones.  Best effort: a scheduler without cleo_dask just keeps its own estimates.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from dask.utils import key_split

from cleo_dask.admission.stealing import floor_duration
from cleo_dask.errors import WorkflowError
from cleo_dask.util.numbers import seconds as check_seconds
from cleo_dask.util.options import Field, OptionPolicy, read_checked

logger = logging.getLogger("cleo_dask")


def prefix_durations(durations: Mapping[str, float]) -> dict[str, float]:
    """Mean known duration per Dask key prefix, from ``{key: seconds}``."""
    sums: dict[str, list[float]] = {}
    for key, seconds in durations.items():
        acc = sums.setdefault(key_split(key), [0.0, 0])
        acc[0] += seconds
        acc[1] += 1
    return {prefix: total / count for prefix, (total, count) in sums.items()}


def seed(client: Any, durations: Mapping[str, float]) -> None:
    """Set the scheduler's duration estimate of each prefix of ``durations`` ({key: seconds}) to
    their mean (call it before the keys are submitted)."""
    if not durations:
        return
    try:
        client.run_on_scheduler(_seed, prefix_durations(durations))
    except Exception:  # noqa: BLE001 - an optimisation: never a reason to fail a submission
        logger.debug("could not give the scheduler duration estimates", exc_info=True)


def _seed(durations: dict[str, float], dask_scheduler: Any = None) -> None:
    from distributed.scheduler import TaskPrefix

    for name, seconds in durations.items():
        prefix = dask_scheduler.task_prefixes.get(name)
        if prefix is None:
            prefix = dask_scheduler.task_prefixes[name] = TaskPrefix(name)
        prefix.duration_average = floor_duration(seconds)   # 0 would trip Dask's work stealing


class DurationOptions(OptionPolicy):
    """The option ``duration`` of a task: its expected seconds (``None``: unknown)."""

    names = ("duration",)

    def check(self, options: Any, what: str) -> None:
        """``duration``: ``None`` or a number of seconds >= 0."""
        if options.duration is not None:
            try:
                check_seconds(options.duration, "duration")
            except WorkflowError as exc:
                raise WorkflowError(f"{what}: {exc}") from None

    def read(self, data: Mapping[str, Any], field: Field, out: dict[str, Any]) -> None:
        """``duration: 12.5`` (``null``: unknown)."""
        if data.get("duration") is not None:
            read_checked(data, "duration", lambda v: check_seconds(v, ""), field, out)


#: The duration estimate's option.
DURATION_OPTIONS = DurationOptions()
