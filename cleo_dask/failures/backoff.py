"""Backoff policies: pure functions from the number of the failed attempt to a delay in seconds
(and how a spec file writes them)."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from cleo_dask.errors import WorkflowError
from cleo_dask.util.numbers import is_real, seconds as check_seconds
from cleo_dask.util.options import Field


@dataclass(frozen=True)
class Backoff:
    """Base of the backoff policies; ``delay(attempt)`` is the wait before attempt ``attempt + 1``."""

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:  # pragma: no cover
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        raise NotImplementedError

    @property
    def is_zero(self) -> bool:
        """True when every retry starts at once (so Dask's own ``retries=`` can do them)."""
        return False


@dataclass(frozen=True)
class Fixed(Backoff):
    """The same delay before every retry."""

    seconds: float = 0.0

    def __post_init__(self) -> None:
        check_seconds(self.seconds, "fixed backoff")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Always ``seconds``."""
        return float(self.seconds)

    @property
    def is_zero(self) -> bool:
        """True for ``fixed(0)``."""
        return self.seconds == 0


@dataclass(frozen=True)
class Exponential(Backoff):
    """``first * factor ** (attempt - 1)``, capped at ``max``, spread by ``± jitter`` (a fraction)."""

    first: float = 1.0
    factor: float = 2.0
    max: float = 60.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        check_seconds(self.first, "exponential backoff 'first'")
        check_seconds(self.max, "exponential backoff 'max'")  # finite: the delay never grows past it
        if not is_real(self.factor) or not 1 <= self.factor < math.inf:
            raise WorkflowError(f"exponential backoff 'factor' must be a number >= 1 and finite, got {self.factor!r}")
        if isinstance(self.jitter, bool) or not isinstance(self.jitter, (int, float)) or not 0 <= self.jitter <= 1:
            raise WorkflowError(f"exponential backoff 'jitter' must be a fraction in [0, 1], got {self.jitter!r}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The capped exponential delay, with jitter drawn from ``rng`` (or :mod:`random`)."""
        try:
            base = min(self.max, self.first * self.factor ** max(0, attempt - 1))
        except OverflowError:  # factor ** attempt beyond floats: long past the cap
            base = float(self.max) if self.first else 0.0
        if self.jitter:
            spread = (rng or random).uniform(-self.jitter, self.jitter)
            base = min(self.max, max(0.0, base * (1 + spread)))
        return base

    @property
    def is_zero(self) -> bool:
        """True when ``first`` (or ``max``) is 0."""
        return self.first == 0 or self.max == 0


def fixed(seconds: float) -> Fixed:
    """A backoff that waits ``seconds`` before every retry: ``cd.fixed(5.0)``."""
    return Fixed(seconds)


def exponential(first: float = 1.0, factor: float = 2.0, max: float = 60.0, jitter: float = 0.0) -> Exponential:  # noqa: A002
    """Exponential backoff: ``cd.exponential(first=1.0, factor=2.0, max=60.0, jitter=0.1)``."""
    return Exponential(first, factor, max, jitter)


NO_BACKOFF = Fixed(0.0)


#: The keys of ``{exponential: {...}}`` in a spec file.
EXPONENTIAL_KEYS = ("first", "factor", "max", "jitter")


def read_backoff(data: Any, field: Field) -> Backoff | None:
    """The backoff a data file gives (seconds, ``{fixed: SECONDS}`` or ``{exponential: {first,
    factor, max, jitter}}``), or ``None`` after reporting what is wrong at ``field``."""
    try:
        if is_real(data):
            return fixed(data)
        if isinstance(data, dict) and len(data) == 1:
            kind, args = next(iter(data.items()))
            inner = field.at(kind, data)
            if kind == "fixed":
                if not is_real(args):
                    inner.problem(f"fixed backoff must be a number of seconds, got {args!r}")
                    return None
                return fixed(args)
            if kind == "exponential":
                args = {} if args is None else args
                if not isinstance(args, dict):
                    inner.problem(f"must be a mapping of {', '.join(EXPONENTIAL_KEYS)}, got {args!r}")
                    return None
                bad = [k for k in args if k not in EXPONENTIAL_KEYS]
                for k in bad:
                    inner.at(k, args).problem(f"unknown key {k!r}; expected one of {', '.join(EXPONENTIAL_KEYS)}")
                return None if bad else exponential(**args)
        field.problem("backoff must be seconds, {fixed: SECONDS} or "
                      f"{{exponential: {{first, factor, max, jitter}}}}, got {data!r}")
    except WorkflowError as exc:
        field.problem(str(exc))
    return None
