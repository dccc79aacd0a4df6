"""The registry of task and node options: which policy owns each option name.

Every entry point reads the option names from here: ``@cd.task(...)`` and
:meth:`TaskSpec.with_options <cleo_dask.core.task.TaskSpec.with_options>` (so
``Workflow.add(**options)`` and ``Task.options``), :func:`check_options`, and the spec-file reader
(``cleo_dask.core.specnodes``).  Each policy (``failures/retry.py``, ``failures/timeout.py``,
``core/fallback.py``, ``admission/io.py``, ``admission/ratelimit.py``, ``core/caching.py``,
``admission/estimates.py``, ``core/batching.py``; ``failures/rules.py`` for the node's trigger) owns its names and
their validation.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cleo_dask.admission.estimates import DURATION_OPTIONS
from cleo_dask.admission.io import IO_BOUND_OPTIONS
from cleo_dask.admission.ratelimit import RATE_LIMIT_OPTIONS
from cleo_dask.core.batching import BATCH_OPTIONS
from cleo_dask.core.caching import CACHE_OPTIONS
from cleo_dask.core.fallback import FALLBACK_OPTIONS
from cleo_dask.errors import WorkflowError
from cleo_dask.failures.retry import RETRY_OPTIONS
from cleo_dask.failures.rules import TRIGGER_OPTIONS
from cleo_dask.failures.timeout import TIMEOUT_OPTIONS
from cleo_dask.util.options import Field, OptionPolicy

#: The policies of a task, in the order their options are listed (and checked).
TASK_POLICIES: tuple[OptionPolicy, ...] = (RETRY_OPTIONS, TIMEOUT_OPTIONS, FALLBACK_OPTIONS, IO_BOUND_OPTIONS,
                                           RATE_LIMIT_OPTIONS, CACHE_OPTIONS, DURATION_OPTIONS, BATCH_OPTIONS)
#: The policies of a node beyond its task's (``Workflow.add(..., trigger=)``).
NODE_POLICIES: tuple[OptionPolicy, ...] = (TRIGGER_OPTIONS,)

#: Option names a task (``@cd.task(...)``, ``wf.add(..., **options)``, a spec file) may set.
TASK_OPTIONS: tuple[str, ...] = tuple(name for policy in TASK_POLICIES for name in policy.names)
#: The options a spec file's node may set besides its task, parents and condition.
FILE_OPTIONS: tuple[str, ...] = tuple(name for policy in NODE_POLICIES + TASK_POLICIES
                                      for name in policy.file_names)


def check_unknown(options: Mapping[str, Any], of: str) -> None:
    """Raise :class:`WorkflowError` if ``options`` names an option no policy owns."""
    unknown = sorted(set(options) - set(TASK_OPTIONS))
    if unknown:
        raise WorkflowError(f"task {of!r}: unknown option(s) {', '.join(unknown)}; "
                            f"known: {', '.join(TASK_OPTIONS)}")


def convert_options(options: dict[str, Any], of: str, as_task: Callable[[Any], Any]) -> dict[str, Any]:
    """``options`` given by a user for task ``of``, normalised in place by their policies."""
    for policy in TASK_POLICIES:
        policy.convert(options, of, as_task)
    return options


def check_options(spec: Any) -> None:
    """Check every policy option of ``spec`` (a task spec); raise :class:`WorkflowError` naming
    the task and the bad option."""
    what = f"task {spec.name!r}"
    for policy in TASK_POLICIES:
        policy.check(spec, what)


def read_options(data: Mapping[str, Any], field: Field) -> dict[str, Any]:
    """The node and task options a spec file's node ``data`` sets validly (problems reported at
    ``field``)."""
    out: dict[str, Any] = {}
    for policy in NODE_POLICIES + TASK_POLICIES:
        policy.read(data, field, out)
    return out
