"""The schedules' structures: the states and outcomes (``str`` enums) and the frozen records
(a stored schedule, a firing, a compare-and-set update, a misfire decision, a validated policy).

Every other schedules module reads these; this one imports none of them.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class ScheduleState(str, enum.Enum):
    """The state of a schedule.  A ``str`` enum: ``schedule.state == "paused"`` works."""

    ACTIVE = "active"
    PAUSED = "paused"
    FINISHED = "finished"     # no more fire times
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


class Outcome(str, enum.Enum):
    """What became of one due time.  A ``str`` enum: ``firing.outcome == "fired"`` works."""

    FIRED = "fired"
    MISSED = "missed"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value


ACTIVE, PAUSED, FINISHED, CANCELLED = (ScheduleState.ACTIVE, ScheduleState.PAUSED, ScheduleState.FINISHED,
                                       ScheduleState.CANCELLED)
FIRED, MISSED, SKIPPED = Outcome.FIRED, Outcome.MISSED, Outcome.SKIPPED
#: a schedule in these states has its pre-staged runs withdrawn
STOPPED = (PAUSED, CANCELLED)


@dataclass(frozen=True)
class ScheduleRecord:
    """A stored schedule.  ``next_fire`` is epoch seconds (``None``: no more firings)."""

    id: str
    name: str
    target: str
    trigger: dict[str, Any]
    next_fire: float | None
    state: str = ACTIVE
    misfire_grace: float | None = None
    coalesce: bool = True
    max_running: int | None = None
    timezone: str = "UTC"
    created: float = 0.0
    version: int = 0
    agent: bytes | None = None
    agent_format: str | None = None
    inputs: str | None = None   # the runs' inputs (workflow parameters' values) as JSON text


@dataclass(frozen=True)
class Firing:
    """One decision about a due time (epoch seconds): ``fired``, ``missed`` or ``skipped``.

    ``lateness``: for a fired one, hand-off (submission) minus due time; otherwise decision
    time minus due time.  ``count`` > 1: that many consecutive due times (``due`` .. ``last_due``).
    """

    schedule_id: str
    due: float
    outcome: str
    reason: str | None = None
    count: int = 1
    last_due: float | None = None
    decided: float = 0.0
    handoff: float | None = None
    run_id: str | None = None
    id: int | None = None

    @property
    def lateness(self) -> float | None:
        """Seconds between the due time and the hand-off (fired) or the decision (otherwise)."""
        if self.outcome == FIRED:
            return None if self.handoff is None else self.handoff - self.due
        return self.decided - self.due


@dataclass(frozen=True)
class Update:
    """A compare-and-set of one schedule after a tick: applied only if its version is still ``version``."""

    id: str
    version: int
    trigger: dict[str, Any]
    next_fire: float | None
    state: str


@dataclass(frozen=True)
class Decision:
    """What happens to one due time (or ``count`` consecutive ones, ``due`` .. ``last_due``)."""

    due: float
    outcome: str
    reason: str | None = None
    count: int = 1
    last_due: float | None = None

    @property
    def fires(self) -> bool:
        """True if this decision starts a run."""
        return self.outcome == FIRED


@dataclass(frozen=True)
class Options:
    """A schedule's policy, validated."""

    misfire_grace: float | None
    coalesce: bool
    max_running: int | None
