"""What the arguments of one submission must be (``Engine.submit`` / ``submit_many``), checked
before anything is compiled or sent."""
from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any

from cleo_dask.errors import WorkflowError
from cleo_dask.util.numbers import MAX_SECONDS, finite_number


def check_submission(priority: Any, fail_fast: Any, not_before: Any) -> None:
    """Raise :class:`WorkflowError` naming the first bad one: ``priority`` a finite number,
    ``fail_fast`` a bool, ``not_before`` finite epoch seconds (or ``None``)."""
    finite_number(priority, "priority")
    if not isinstance(fail_fast, bool):
        raise WorkflowError(f"fail_fast must be True or False, got {fail_fast!r}")
    if not_before is not None:
        try:
            finite_number(not_before, "not_before")
        except WorkflowError:
            raise WorkflowError(f"not_before must be epoch seconds (a finite number), got {not_before!r}") from None
        if not_before > time.time() + MAX_SECONDS:  # held on the scheduler for ever, in effect
            raise WorkflowError(f"not_before must be at most 100 years from now (epoch seconds), got {not_before!r}")


@functools.lru_cache(maxsize=16)
def _parameters(fn: Callable[..., Any]) -> list[str]:
    """``fn``'s parameter names (asked once per function: ``inspect.signature`` is slow per item)."""
    return [p for p in inspect.signature(fn).parameters if p != "self"]


def batch_item(item: Any, index: int, submit: Callable[..., Any]) -> dict[str, Any]:
    """One item of ``submit_many`` as keyword arguments of ``submit``; unknown keys are named."""
    if not isinstance(item, Mapping):
        raise WorkflowError(f"submit_many: item {index} must be a mapping of submit()'s arguments "
                            f"(target, agent, ...), got {type(item).__name__}")
    known = _parameters(getattr(submit, "__func__", submit))
    unknown = sorted(map(repr, set(item) - set(known)))
    if unknown:
        raise WorkflowError(f"submit_many: item {index} has unknown key(s) {', '.join(unknown)}; "
                            f"known: {', '.join(known)}")
    return dict(item)
