"""What stands in when a task has finally failed: the options ``fallback`` and ``on_error``.

``fallback(agent, error, **inputs)`` is a task run in its place, whose result stands in;
``on_error(agent, task_name, error)`` is called on the client once per final failure.
"""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from cleo_dask.errors import WorkflowError
from cleo_dask.util.options import Field, OptionPolicy, not_callable


class FallbackOptions(OptionPolicy):
    """The options ``fallback`` (a task) and ``on_error`` (a callable) of a task."""

    names = ("fallback", "on_error")

    def check(self, options: Any, what: str) -> None:
        """``fallback`` a task of the same kind (sync or async) as ``options``; ``on_error`` callable."""
        fallback = options.fallback
        if fallback is not None and not isinstance(fallback, type(options)):
            raise WorkflowError(f"{what}: fallback must be a task, got {fallback!r}")
        if options.on_error is not None and not callable(options.on_error):
            raise WorkflowError(f"{what}: on_error must be callable (agent, task name, error), "
                                f"got {options.on_error!r}")
        if fallback is not None and fallback.is_async != options.is_async:
            kind = "async" if fallback.is_async else "sync"
            raise WorkflowError(f"{what}: its fallback {fallback.name!r} is {kind}, the task is not; "
                                "a fallback must be of the same kind (sync or async) as its task")

    def convert(self, options: dict[str, Any], of: str, as_task: Callable[[Any], Any]) -> None:
        """``fallback`` as a task spec that takes the error after the agent (:func:`fallback_spec`)."""
        if options.get("fallback") is not None:
            options["fallback"] = fallback_spec(options["fallback"], of, as_task)

    def read(self, data: Mapping[str, Any], field: Field, out: dict[str, Any]) -> None:
        """``fallback: mypkg.tasks:short_summary``, ``on_error: mypkg.alerts:page``."""
        for key in self.names:
            if data.get(key) is not None:
                out[key] = field.at(key, data).load(data[key], not_callable)


#: The fallback policy's options.
FALLBACK_OPTIONS = FallbackOptions()


def fallback_spec(fallback: Any, of: str, as_task: Callable[[Any], Any]) -> Any:
    """The task spec (``as_task(fallback)``) of the fallback of task ``of``; it is called as
    ``fallback(agent, error, **inputs)``, so its signature leaves out the error."""
    try:
        spec = as_task(fallback)
    except WorkflowError:
        raise WorkflowError(f"task {of!r}: fallback must be a task (a callable), got {fallback!r}") from None
    sig = spec.signature
    # the error takes the first parameter after the agent; it is passed positionally
    params = _positional_params(spec.fn)
    if len(params) < 2 and not _has_var_positional(spec.fn):
        raise WorkflowError(f"task {of!r}: fallback {spec.name!r} must accept (agent, error, **inputs)")
    if params[1:2]:
        sig = sig.without(params[1])
    return dataclasses.replace(spec, signature=sig)


def _positional_params(fn: Callable[..., Any]) -> list[str]:
    try:
        return [p.name for p in inspect.signature(fn).parameters.values()
                if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return ["agent", "error"]


def _has_var_positional(fn: Callable[..., Any]) -> bool:
    try:
        return any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return True
