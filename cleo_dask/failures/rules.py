"""Trigger rules: whether a node runs given what happened to its parents."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cleo_dask.errors import WorkflowError
from cleo_dask.util.options import Field, OptionPolicy

ALL_SUCCESS = "all_success"
ALL_DONE = "all_done"
ONE_FAILED = "one_failed"
TRIGGER_RULES = (ALL_SUCCESS, ALL_DONE, ONE_FAILED)
FAILED, SKIPPED, UPSTREAM_FAILED = "failed", "skipped", "upstream_failed"


def check_trigger(rule: object) -> str:
    """Return ``rule`` if it is a known trigger rule, else raise :class:`WorkflowError`."""
    if rule not in TRIGGER_RULES:
        raise WorkflowError(f"unknown trigger rule {rule!r}; expected one of {', '.join(TRIGGER_RULES)}")
    return rule  # type: ignore[return-value]


class TriggerOptions(OptionPolicy):
    """The option ``trigger`` of a node (``Workflow.add(..., trigger=)``, a spec file's node)."""

    names = ("trigger",)

    def check(self, options: Any, what: str) -> None:
        """``trigger``: a known rule (:func:`check_trigger`)."""
        check_trigger(options.trigger)

    def read(self, data: Mapping[str, Any], field: Field, out: dict[str, Any]) -> None:
        """``trigger: all_done``."""
        if "trigger" in data:
            try:
                out["trigger"] = check_trigger(data["trigger"])
            except WorkflowError as exc:
                field.at("trigger", data).problem(str(exc))


#: The trigger rule's option.
TRIGGER_OPTIONS = TriggerOptions()


def skip_reason(rule: str, parents: Sequence[tuple[str, str]]) -> str | None:
    """Why a node with trigger ``rule`` must not run, or ``None`` if it runs.

    ``parents`` holds ``(parent name, parent status)`` pairs, the status being one of
    ``succeeded``, ``fell_back``, ``skipped``, ``upstream_failed``, ``failed``.
    """
    decision = skip_decision(rule, [(name, status, None) for name, status in parents])
    return None if decision is None else decision[1]


def skip_decision(rule: str, parents: Sequence[tuple[str, str, str | None]]) -> tuple[str, str] | None:
    """``(status, reason)`` of a node with trigger ``rule`` that must not run, or ``None`` if it runs.

    ``parents`` holds ``(name, status, reason)`` triples.  Under ``all_success`` a failed parent,
    or one that is itself ``upstream_failed``, makes the node ``upstream_failed`` with the failing
    ancestor named in the reason (``upstream 'a' failed (via 'b')``); a skipped parent makes it
    ``skipped``.  ``upstream_failed`` is a kind of skip: ``one_failed`` does not count it as a failure.
    """
    if rule == ALL_SUCCESS:
        for name, status, _ in parents:
            if status == FAILED:
                return UPSTREAM_FAILED, f"upstream {name!r} failed"
        for name, status, reason in parents:
            if status == UPSTREAM_FAILED:
                return UPSTREAM_FAILED, f"{_origin(reason, name)} (via {name!r})"
        for name, status, _ in parents:
            if status == SKIPPED:
                return SKIPPED, f"upstream {name!r} was skipped"
        return None
    if rule == ALL_DONE:
        return None
    if rule == ONE_FAILED:
        if any(status == FAILED for _, status, _ in parents):
            return None
        return SKIPPED, "no upstream task failed"
    raise WorkflowError(f"unknown trigger rule {rule!r}")


def _origin(reason: str | None, parent: str) -> str:
    """The ``upstream 'x' failed`` part of an upstream_failed parent's reason (the failing ancestor)."""
    if reason and reason.startswith("upstream "):
        return reason.split(" (via ", 1)[0]
    return f"upstream {parent!r} failed"
