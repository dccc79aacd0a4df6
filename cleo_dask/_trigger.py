"""Trigger rules: whether a node runs given what happened to its parents."""
from __future__ import annotations

from collections.abc import Sequence

from ._errors import WorkflowError

ALL_SUCCESS = "all_success"
ALL_DONE = "all_done"
ONE_FAILED = "one_failed"
TRIGGER_RULES = (ALL_SUCCESS, ALL_DONE, ONE_FAILED)


def check_trigger(rule: object) -> str:
    """Return ``rule`` if it is a known trigger rule, else raise :class:`WorkflowError`."""
    if rule not in TRIGGER_RULES:
        raise WorkflowError(f"unknown trigger rule {rule!r}; expected one of {', '.join(TRIGGER_RULES)}")
    return rule  # type: ignore[return-value]


def skip_reason(rule: str, parents: Sequence[tuple[str, str]]) -> str | None:
    """Why a node with trigger ``rule`` must not run, or ``None`` if it runs.

    ``parents`` holds ``(parent name, parent status)`` pairs, the status being one of
    ``succeeded``, ``fell_back``, ``skipped``, ``failed``.
    """
    if rule == ALL_SUCCESS:
        for name, status in parents:
            if status == "failed":
                return f"upstream {name!r} failed"
        for name, status in parents:
            if status == "skipped":
                return f"upstream {name!r} was skipped"
        return None
    if rule == ALL_DONE:
        return None
    if rule == ONE_FAILED:
        if any(status == "failed" for _, status in parents):
            return None
        return "no upstream task failed"
    raise WorkflowError(f"unknown trigger rule {rule!r}")
