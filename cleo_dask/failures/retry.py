"""The retry policy: how many attempts, how long to wait between them, on which errors; and its
options ``retries``, ``backoff``, ``retry_on`` (:data:`RETRY_OPTIONS`)."""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cleo_dask.failures.backoff import NO_BACKOFF, Backoff, read_backoff
from cleo_dask.errors import Retry, WorkflowError
from cleo_dask.util.numbers import MAX_SECONDS, count, is_real
from cleo_dask.util.options import Field, OptionPolicy, not_exception_class, read_checked


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` extra attempts after the first, ``backoff`` between them, on ``retry_on`` errors.

    A task body may also raise :class:`cleo_dask.Retry` to ask for a retry on any error; the
    number of attempts is still bounded by ``retries``.
    """

    retries: int = 0
    backoff: Backoff = NO_BACKOFF
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        count(self.retries, "retries")
        if not isinstance(self.backoff, Backoff):
            raise WorkflowError(f"backoff must be cd.fixed(...) or cd.exponential(...), got {self.backoff!r}")
        check_retry_on(self.retry_on)

    @property
    def uses_dask_retries(self) -> bool:
        """True when Dask's own ``retries=`` can do every retry: no delay, and any exception retries."""
        return self.retries > 0 and self.backoff.is_zero and self.retry_on == (Exception,)

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether failed attempt number ``attempt`` (1-based) is followed by another."""
        if attempt > self.retries:
            return False
        return isinstance(error, Retry) or isinstance(error, self.retry_on)

    def delay(self, error: BaseException, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the attempt after ``attempt``; a :class:`Retry` may set it."""
        if isinstance(error, Retry) and error.delay is not None:
            asked = _requested_delay(error.delay)
            if asked is not None:
                return asked
        return self.backoff.delay(attempt, rng)


def _requested_delay(delay: object) -> float | None:
    """The delay a task body asked for with ``Retry(delay=...)``, kept within ``[0, MAX_SECONDS]``
    (``inf`` must not hang the run); ``None`` if it is not a number (the backoff applies)."""
    if not is_real(delay) or delay != delay:  # type: ignore[comparison-overlap] - NaN
        return None
    try:
        value = float(delay)  # type: ignore[arg-type]
    except OverflowError:  # an int beyond floats
        value = math.inf if delay > 0 else 0.0  # type: ignore[operator]
    return min(max(0.0, value), MAX_SECONDS)


def check_retry_on(retry_on: object) -> tuple[type[BaseException], ...]:
    """Normalise ``retry_on`` to a tuple of exception classes or raise :class:`WorkflowError`."""
    items = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    if not items or not all(isinstance(t, type) and issubclass(t, BaseException) for t in items):
        raise WorkflowError(f"retry_on must be an exception class or a tuple of them, got {retry_on!r}")
    return items


class RetryOptions(OptionPolicy):
    """The options ``retries``, ``backoff`` and ``retry_on`` of a task."""

    names = ("retries", "backoff", "retry_on")

    def check(self, options: Any, what: str) -> None:
        """``backoff`` a :class:`Backoff`, ``retries`` a count, ``retry_on`` exception classes."""
        if options.backoff is not None and not isinstance(options.backoff, Backoff):
            raise WorkflowError(f"{what}: backoff must be cd.fixed(...) or cd.exponential(...), "
                                f"got {options.backoff!r}")
        try:
            if options.retries is not None:
                count(options.retries, "retries")
            check_retry_on(options.retry_on)
        except WorkflowError as exc:
            raise WorkflowError(f"{what}: {exc}") from None

    def convert(self, options: dict[str, Any], of: str, as_task: Callable[[Any], Any]) -> None:
        """``retry_on`` as a tuple of exception classes."""
        if "retry_on" in options:
            options["retry_on"] = check_retry_on(options["retry_on"])

    def read(self, data: Mapping[str, Any], field: Field, out: dict[str, Any]) -> None:
        """``retries: 2``, ``backoff: {exponential: {...}}``, ``retry_on: [builtins:ConnectionError]``."""
        if "retries" in data:
            read_checked(data, "retries", lambda v: count(v, ""), field, out)
        if "backoff" in data:
            out["backoff"] = read_backoff(data["backoff"], field.at("backoff", data))
        if "retry_on" in data:
            at = field.at("retry_on", data)
            paths = data["retry_on"]
            paths = [paths] if isinstance(paths, str) else paths
            if not isinstance(paths, list) or not paths:
                at.problem(f"must be an import path or a list of them, got {data['retry_on']!r}")
            else:
                out["retry_on"] = tuple(at.load(p, not_exception_class) for p in paths)


#: The retry policy's options.
RETRY_OPTIONS = RetryOptions()
