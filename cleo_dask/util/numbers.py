"""Numbers given by users (seconds, counts, priorities): finite and in range, or a clear error.

Every option that takes a number checks it here, so that ``inf``, ``nan``, ``1e300`` or a
negative count is refused where it is given (API, spec file or command line) with an error
naming the field, instead of hanging a run or overflowing deep inside ``threading``,
``datetime`` or msgpack.  Each policy keeps owning its option and calls these functions.
"""
from __future__ import annotations

import math
from typing import Any

from cleo_dask.errors import CleoError, WorkflowError

#: The longest duration accepted anywhere (timeouts, backoffs, schedule intervals, durations):
#: 100 years, below ``threading.TIMEOUT_MAX`` and far from ``datetime``'s year 9999.
MAX_SECONDS = 100 * 365.25 * 86400.0
#: The largest count accepted (retries, max_concurrency, max_running): an int32, so it travels
#: in Dask's messages and SQLite unchanged.
MAX_COUNT = 2**31 - 1


def is_real(value: object) -> bool:
    """True for an ``int`` or ``float`` that is not a ``bool`` (finite or not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite_number(value: Any, field: str, *, minimum: float | None = None, above: float | None = None,
                  maximum: float | None = None, unit: str = "", error: type[CleoError] = WorkflowError) -> float:
    """``value`` as a float if it is a finite real number within the bounds; else ``error`` naming ``field``.

    ``minimum`` / ``maximum``: inclusive bounds; ``above``: an exclusive lower bound; ``unit``: a
    word for the messages (``"seconds"``).  An empty ``field`` makes messages start with "must be"
    (for callers that name the field themselves, as spec files do with their locations).
    """
    units = f" {unit}" if unit else ""
    if not is_real(value):
        raise error(f"{_name(field)}must be a number{' of ' + unit if unit else ''}, got {_show(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        number = math.inf if value > 0 else -math.inf
    if math.isnan(number):
        raise error(f"{_name(field)}must be a number{' of ' + unit if unit else ''}, got {_show(value)}")
    if above is not None and not number > above:
        raise error(f"{_name(field)}must be > {above:g}{units}, got {_show(value)}")
    if minimum is not None and number < minimum:
        raise error(f"{_name(field)}must be >= {minimum:g}{units}, got {_show(value)}")
    if math.isinf(number):
        raise error(f"{_name(field)}must be a finite number{' of ' + unit if unit else ''}, got {_show(value)}")
    if maximum is not None and number > maximum:
        raise error(f"{_name(field)}must be at most {_limit(maximum, unit)}, got {_show(value)}")
    return number


def seconds(value: Any, field: str, *, positive: bool = False, maximum: float = MAX_SECONDS,
            error: type[CleoError] = WorkflowError) -> float:
    """A duration in seconds: finite, ``>= 0`` (``> 0`` if ``positive``), at most ``maximum``."""
    if positive:
        return finite_number(value, field, above=0, maximum=maximum, unit="seconds", error=error)
    return finite_number(value, field, minimum=0, maximum=maximum, unit="seconds", error=error)


def count(value: Any, field: str, *, minimum: int = 0, maximum: int = MAX_COUNT,
          error: type[CleoError] = WorkflowError) -> int:
    """An integer (not a bool) in ``[minimum, maximum]``; else ``error`` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise error(f"{_name(field)}must be an integer >= {minimum}, got {_show(value)}")
    if value > maximum:
        raise error(f"{_name(field)}must be an integer <= {maximum}, got {_show(value)}")
    return value


def _name(field: str) -> str:
    return f"{field} " if field else ""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _limit(maximum: float, unit: str) -> str:
    if unit == "seconds" and maximum == MAX_SECONDS:
        return f"{maximum:.0f} seconds (100 years)"
    return f"{maximum:g}{' ' + unit if unit else ''}"
