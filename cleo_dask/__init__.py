"""cleo_dask: run the tasks of AI agents on Dask.

A workflow of tasks is validated with networkx, compiled into one Dask graph and submitted in
one call; failures are handled on the client (delayed retries, fallbacks, trigger rules) so that
nothing waiting holds a worker.
"""
from . import _config  # noqa: F401 - registers cleo_dask's defaults in dask.config
from ._agent import Agent
from ._backoff import Backoff, exponential, fixed
from ._cluster_needs import ClusterWarning
from ._durable import RunStore
from ._engine import Engine
from ._journal import RunRecord
from ._logs import JsonFormatter, configure_logging
from ._errors import CleoError, ClusterError, CodeError, ClusterLost, Retry, ScheduleError, StoreError, TaskTimeout, WorkflowError
from ._outcome import Attempt, Failure, Status, TaskResult
from ._run import Run, RunOutcome
from ._schedule_store import Firing
from ._spec import Spec, load_spec
from ._scheduler import Schedule
from ._task import Task, TaskSpec, task
from ._timeout import deadline, time_left
from ._workflow import Node, Workflow

__version__ = "0.1.0"

__all__ = [
    "Agent", "Attempt", "Backoff", "CleoError", "ClusterError", "CodeError", "Engine", "Failure", "JsonFormatter", "Node", "Retry", "Run", "RunOutcome",
    "RunRecord", "RunStore", "ClusterLost", "ClusterWarning",
    "Firing", "Schedule", "ScheduleError", "Spec", "load_spec", "Status", "StoreError", "Task", "TaskResult", "TaskSpec", "TaskTimeout", "Workflow",
    "WorkflowError", "configure_logging", "deadline", "exponential", "fixed", "task", "time_left", "__version__",
]
