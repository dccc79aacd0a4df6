"""Outcomes: what happened to one node in one run (its record), apart from its spec."""
from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Status(str, enum.Enum):
    """The outcome of a node.  A ``str`` enum: ``result.status == "succeeded"`` works."""

    SUCCEEDED = "succeeded"
    FELL_BACK = "fell_back"   # finally failed, its fallback's result stands in
    FAILED = "failed"
    SKIPPED = "skipped"       # ``when`` false, or the trigger rule said no
    UPSTREAM_FAILED = "upstream_failed"   # a kind of skip: an ancestor failed (named in ``reason``)
    CANCELLED = "cancelled"
    PENDING = "pending"       # not finished yet (only in live views)

    def __str__(self) -> str:
        return self.value


#: The statuses of a node that did not run: counted, reported and obeyed (trigger rules, exit
#: codes) alike; ``upstream_failed`` only says why.
SKIP_STATUSES = frozenset({Status.SKIPPED.value, Status.UPSTREAM_FAILED.value})


@dataclass(frozen=True)
class Attempt:
    """One attempt at running a node: when, where, and how it ended.

    ``kind`` tells the task's own attempts (``"task"``) from the execution of its fallback
    (``"fallback"``), which comes last in :attr:`TaskResult.attempts` when the task finally failed.
    """

    number: int
    start: float | None
    end: float | None
    worker: str | None
    error: str | None = None          # repr of the exception, None if the attempt succeeded
    error_type: str | None = None
    timed_out: bool = False
    crashed: bool = False             # the worker died (or the task could not run at all)
    kind: str = "task"                # "task": the task itself; "fallback": its fallback standing in

    @property
    def duration(self) -> float | None:
        """Seconds the attempt took, when known."""
        return None if self.start is None or self.end is None else self.end - self.start


@dataclass(frozen=True)
class Failure:
    """What a failed parent hands to a child with trigger ``all_done`` or ``one_failed``."""

    node: str
    error: BaseException | None
    traceback: str | None = None

    def __bool__(self) -> bool:
        return False


class TaskResult:
    """The outcome of one node: ``status``, ``value`` (fetched on first access), ``error``, attempts."""

    __slots__ = ("node", "status", "_value", "_fetch", "error", "traceback", "attempts", "start", "end",
                 "worker", "reason", "fallback_used", "upstream_fallbacks", "worker_losses", "run_id",
                 "children")

    def __init__(self, node: str, status: Status, *, value: Any = None, fetch: Callable[[], Any] | None = None,
                 error: BaseException | None = None, traceback: str | None = None,
                 attempts: tuple[Attempt, ...] = (), start: float | None = None, end: float | None = None,
                 worker: str | None = None, reason: str | None = None, fallback_used: bool = False,
                 upstream_fallbacks: tuple[str, ...] = (), worker_losses: int = 0, run_id: str | None = None):
        self.node = node
        self.status = Status(status)
        self._value = value
        self._fetch = fetch
        self.error = error
        self.traceback = traceback
        self.attempts = attempts
        self.start = start
        self.end = end
        self.worker = worker
        self.reason = reason
        self.fallback_used = fallback_used
        self.upstream_fallbacks = upstream_fallbacks
        self.worker_losses = worker_losses
        self.run_id = run_id
        self.children: tuple[str, ...] = ()   # a mapped node's items, in order (core/mapping.py)

    @property
    def value(self) -> Any:
        """The node's result (the fallback's when one stood in); ``None`` if it did not succeed."""
        if self._fetch is not None:
            self._value = self._fetch()
            self._fetch = None
        return self._value

    @property
    def ok(self) -> bool:
        """True if the node produced a value (succeeded, or its fallback did)."""
        return self.status in (Status.SUCCEEDED, Status.FELL_BACK)

    @property
    def duration(self) -> float | None:
        """Seconds from the first attempt's start to the last one's end."""
        return None if self.start is None or self.end is None else self.end - self.start

    def __repr__(self) -> str:
        extra = f", error={self.error!r}" if self.error is not None else ""
        extra += f", reason={self.reason!r}" if self.reason else ""
        return f"TaskResult({self.node!r}, {self.status.value}, attempts={len(self.attempts)}{extra})"

    def to_dict(self, with_value: bool = False) -> dict[str, Any]:
        """A JSON-friendly summary (the value only when asked: it may be large or not serialisable)."""
        out: dict[str, Any] = {
            "node": self.node, "status": self.status.value, "attempts": len(self.attempts),
            "start": self.start, "end": self.end, "duration": self.duration, "worker": self.worker,
            "error": repr(self.error) if self.error is not None else None, "reason": self.reason,
            "fallback_used": self.fallback_used, "upstream_fallbacks": list(self.upstream_fallbacks),
        }
        if with_value:
            out["value"] = self.value
        return out


@dataclass
class NodeRecord:
    """Client-side record of a node across generations (attempts seen, final state once known)."""

    attempts: list[Attempt] = field(default_factory=list)
    error: BaseException | None = None
    traceback: str | None = None
    worker_losses: int = 0
