"""What an import path names: a workflow, a task, or a function that builds a workflow: pure.

``cleo-dask run pkg:name``, a queue request's ``"target": "pkg:name"`` and
``engine.submit("pkg:name")`` read it the same way: a :class:`Workflow` is run; a task
(``@cd.task``, or a function whose first parameter is ``agent``) is a one-node workflow; any
other callable that takes no arguments is a *factory*, called to build the workflow.
"""
from __future__ import annotations

import inspect
from typing import Any

from cleo_dask.core.task import Task, TaskSpec
from cleo_dask.core.workflow import Workflow


def takes_agent(fn: Any) -> bool:
    """Whether ``fn`` looks like a task function (``fn(agent, ...)``) rather than a workflow factory."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0].name == "agent" and params[0].default is inspect.Parameter.empty


def is_factory(obj: Any) -> bool:
    """Whether ``obj`` is a function to call for a workflow: not a workflow, not a task, and callable
    with no arguments (anything else is left to the task checks, which name what is wrong)."""
    if not callable(obj) or isinstance(obj, (Workflow, Task, TaskSpec)) or takes_agent(obj):
        return False
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return True
    return all(p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in params)
