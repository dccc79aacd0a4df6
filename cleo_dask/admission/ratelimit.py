"""Rate limits such as ``"60/m"``: parsing, and the pure arithmetic of spacing starts.

A limit of ``n`` per period lets one start through every ``period / n`` seconds, evenly spaced
(like Celery's ``rate_limit``; no burst), and never more than ``n`` in any window of one period
(:func:`window_allows`), cluster-wide: the admission plugin on the scheduler
(:mod:`cleo_dask.admission.plugin`) keeps one schedule per rate-limited task and calls
:func:`next_start` with its own clock.  Starts released late by the event loop do not slow the
schedule down: the next start is due one interval after the *planned* one, so the average rate
stays exact (see :func:`catch_up`); after an idle spell the schedule restarts from now.
"""
from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cleo_dask.errors import WorkflowError
from cleo_dask.util.numbers import MAX_SECONDS, finite_number
from cleo_dask.util.options import Field, OptionPolicy

_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
          "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+?)s?\s*$")


@dataclass(frozen=True)
class Rate:
    """``count`` starts per ``per`` seconds."""

    count: float
    per: float

    @property
    def interval(self) -> float:
        """Seconds between two starts."""
        return self.per / self.count

    def __str__(self) -> str:
        return f"{self.count:g}/{self.per:g}s"


def parse_rate(text: object) -> Rate:
    """Parse ``"60/m"``, ``"100/s"``, ``"10/h"``, ``"5/min"``, ``"1/10s"`` or a number (per second).

    Raises :class:`WorkflowError` for anything else, and for a rate that is not positive.
    """
    if isinstance(text, bool):
        raise WorkflowError(f"rate_limit must look like '60/m' or '100/s', got {text!r}")
    if isinstance(text, (int, float)):
        return _checked(Rate(finite_number(text, "rate_limit", above=0, unit="starts per second"), 1.0), text)
    m = _PATTERN.match(text.lower()) if isinstance(text, str) else None
    if m is None or m.group(3) not in _UNITS:
        raise WorkflowError(f"rate_limit must look like '60/m', '100/s', '10/h' or '1/10s' "
                            f"(count per s, m, h or d), got {text!r}")
    count = float(m.group(1))
    per = float(m.group(2) or 1) * _UNITS[m.group(3)]
    if not count > 0 or not per > 0:
        raise WorkflowError(f"rate_limit must allow at least some starts (count and period > 0), got {text!r}")
    return _checked(Rate(count, per), text)


def _checked(rate: Rate, text: object) -> Rate:
    """``rate`` if its numbers are finite and its period and interval at most ``MAX_SECONDS``."""
    if not (math.isfinite(rate.count) and rate.per <= MAX_SECONDS and rate.interval <= MAX_SECONDS):
        raise WorkflowError(f"rate_limit {text!r} is out of range: the count must be finite, the period and "
                            f"the time between two starts at most {MAX_SECONDS:.0f} seconds (100 years)")
    return rate


def window_allows(recent: deque[float], now: float, rate: Rate) -> tuple[bool, float]:
    """The hard cap: at most ``rate.count`` starts in any window of ``rate.per`` seconds.

    ``recent`` holds the times of the latest starts (oldest first; pruned here).  Returns
    ``(True, now)`` if one more start fits, else ``(False, when the oldest leaves the window)``.
    """
    while recent and recent[0] <= now - rate.per:
        recent.popleft()
    if len(recent) < rate.count:
        return True, now
    return False, recent[0] + rate.per


def catch_up(interval: float) -> float:
    """How late (seconds) a start may be and still keep the schedule (beyond: restart from now).

    One second, or one interval if longer.  A scheduler whose process was descheduled for a
    moment on a busy machine (hundreds of milliseconds are common on a loaded box) then admits
    the starts it missed at once, so the average rate stays exact, as far as the hard cap of
    :func:`window_allows` (``count`` starts in any window of one period) lets it.  Only tasks
    that were already waiting catch up: the admission plugin restarts the schedule when a task
    arrives for a rate that had nobody waiting, so an idle spell never turns into a burst.
    """
    return max(interval, 1.0)


def next_start(due: float | None, now: float, interval: float) -> tuple[bool, float]:
    """One step of the spacing schedule.

    ``due``: when the next start is planned (``None``: never started).  Returns ``(True, new
    due)`` if a start may happen ``now``, else ``(False, due)`` (wait until ``due``).
    """
    if due is None or now - due >= catch_up(interval):  # first start, or idle: restart from now
        return True, now + interval
    if now >= due:
        return True, due + interval
    return False, due


class RateLimitOptions(OptionPolicy):
    """The option ``rate_limit`` of a task: ``"10/minute"`` (``None``: no limit)."""

    names = ("rate_limit",)

    def check(self, options: Any, what: str) -> None:
        """``rate_limit``: ``None`` or a rate :func:`parse_rate` accepts."""
        if options.rate_limit is not None:
            try:
                parse_rate(options.rate_limit)
            except WorkflowError as exc:
                raise WorkflowError(f"{what}: {exc}") from None

    def read(self, data: Mapping[str, Any], field: Field, out: dict[str, Any]) -> None:
        """``rate_limit: 10/minute`` (a string; parsed when the task is built)."""
        if data.get("rate_limit") is not None:
            if not isinstance(data["rate_limit"], str):
                field.at("rate_limit", data).problem(
                    f"must be a string such as '10/minute', got {data['rate_limit']!r}")
            else:
                out["rate_limit"] = data["rate_limit"]


#: The rate-limit policy's option.
RATE_LIMIT_OPTIONS = RateLimitOptions()
