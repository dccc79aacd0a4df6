"""cleo_dask: run the tasks of AI agents on Dask.

A workflow of tasks is validated with networkx, compiled into one Dask graph and submitted in
one call; failures are handled on the client (delayed retries, fallbacks, trigger rules) so that
nothing waiting holds a worker.
"""
from cleo_dask import config as _config  # noqa: F401 - registers cleo_dask's defaults in dask.config
from cleo_dask.core.agent import Agent
from cleo_dask.failures.backoff import Backoff, exponential, fixed
from cleo_dask.admission.cluster_needs import ClusterWarning
from cleo_dask.durable.durability import RunStore
from cleo_dask.engine import Engine
from cleo_dask.durable.journal import RunRecord
from cleo_dask.monitor.logs import JsonFormatter, configure_logging
from cleo_dask.errors import CleoError, ClusterError, CodeError, ClusterLost, Retry, ScheduleError, StoreError, TaskTimeout, WorkflowError
from cleo_dask.core.outcome import Attempt, Failure, Status, TaskResult
from cleo_dask.runs.run import Run, RunOutcome
from cleo_dask.schedules.records import Firing
from cleo_dask.core.spec import Spec, load_spec
from cleo_dask.schedules.handle import Schedule
from cleo_dask.core.task import Task, TaskSpec, task
from cleo_dask.failures.timeout import deadline, time_left
from cleo_dask.core.node import Node
from cleo_dask.queues import Queue, publish
from cleo_dask.core.workflow import Workflow
from cleo_dask.dynamic.spawn import ChildRun, spawn
from cleo_dask.core.signal import SignalTimeout

from cleo_dask.version import __version__

__all__ = [
    "Agent", "Attempt", "Backoff", "CleoError", "ClusterError", "CodeError", "Engine", "Failure", "JsonFormatter", "Node", "Retry", "Run", "RunOutcome",
    "RunRecord", "RunStore", "ClusterLost", "ClusterWarning",
    "Firing", "Schedule", "ScheduleError", "Spec", "load_spec", "Status", "StoreError", "Task", "TaskResult", "TaskSpec", "TaskTimeout", "Workflow",
    "WorkflowError", "ChildRun", "SignalTimeout", "Queue", "publish", "spawn", "configure_logging", "deadline", "exponential", "fixed", "task", "time_left", "__version__",
]
