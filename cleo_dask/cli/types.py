"""Argument types for the ``cleo-dask`` parsers: numbers checked as the API checks them.

A bad value is reported by argparse (usage and one error line naming the flag, exit 2) before
any command runs, e.g. ``--connect-timeout nan`` or ``runs forget --older-than -1``.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from cleo_dask.errors import CleoError
from cleo_dask.util.numbers import MAX_SECONDS, count, finite_number, seconds

#: The largest TCP port.
MAX_PORT = 65535


def _argtype(name: str, check: Callable[[Any], Any], convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        try:
            return check(value)
        except CleoError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = name  # argparse names the type in some messages
    return parse


def seconds_type(*, positive: bool = True) -> Callable[[str], float]:
    """Seconds: a finite number, ``> 0`` (``>= 0`` unless ``positive``), at most 100 years."""
    return _argtype("seconds", lambda v: seconds(v, "the value", positive=positive), float)


def days_type() -> Callable[[str], float]:
    """Days: a finite number ``>= 0``, at most 100 years."""
    return _argtype("days", lambda v: finite_number(v, "the value", minimum=0, maximum=MAX_SECONDS / 86400,
                                                    unit="days"), float)


def count_type(minimum: int = 0) -> Callable[[str], int]:
    """An integer ``>= minimum``."""
    return _argtype("an integer", lambda v: count(v, "the value", minimum=minimum), int)


def port_type() -> Callable[[str], int]:
    """A TCP port: 0 (any free port) to 65535."""
    return _argtype("a port", lambda v: count(v, "a port", maximum=MAX_PORT), int)
