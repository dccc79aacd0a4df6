"""The exceptions cleo_dask raises, all under one base, :class:`CleoError`."""
from __future__ import annotations


class CleoError(Exception):
    """Base class of every error cleo_dask raises on its own account."""


class WorkflowError(CleoError, ValueError):
    """A workflow, task or policy is invalid; raised before anything is submitted."""


class ScheduleError(CleoError, ValueError):
    """A schedule is invalid (bad cron field, unknown time zone, naive datetime, ...)."""


class StoreError(CleoError):
    """A journal or result store cannot be used: unknown run, wrong schema, corrupted file."""


class ClusterError(CleoError, ConnectionError):
    """The cluster cannot be reached: a bad scheduler address, nothing listening, a failed handshake.

    Dask's own exception is its ``__cause__``.  Also a :class:`ConnectionError` (an ``OSError``),
    as Dask's errors for an unreachable scheduler are.
    """

class ClusterLost(ClusterError):
    """The client lost its Dask scheduler (or was closed) before a run finished.

    Raised by :meth:`Run.result` / :meth:`Run.wait`.  ``address`` is the scheduler's address,
    ``run_id`` the run's id.  With ``store=`` the journal marks the run ``interrupted``: nodes
    that finished keep their stored outputs, and ``engine.resume(run_id)`` (``cleo-dask resume``)
    runs the others once a cluster is back.
    """

    def __init__(self, message: str, address: str | None = None, run_id: str | None = None):
        super().__init__(message)
        self.address = address
        self.run_id = run_id

    def __reduce__(self):
        return (type(self), (str(self), self.address, self.run_id))

class CodeError(CleoError):
    """The tasks' code cannot reach the cluster: an ``upload=`` / ``--upload`` path that is missing
    or not a module, package or directory; code of the user's own modules that cannot travel by
    value; or a task the scheduler or a worker cannot load (the message names the module and the
    fix).  When a node fails because the cluster cannot load it, this is its result's ``error``.
    """


class TaskTimeout(CleoError, TimeoutError):
    """An attempt ran longer than its task's ``timeout``.

    Also a :class:`TimeoutError`, so ``retry_on=(TimeoutError,)`` retries it.
    """


class Retry(CleoError):
    """Raised by a task body to ask for another attempt, whatever ``retry_on`` says.

    ``delay`` (seconds) overrides the backoff for this one retry when given.
    The task's ``retries`` still bounds the number of attempts.
    """

    def __init__(self, message: str = "retry requested", delay: float | None = None):
        super().__init__(message)
        self.delay = delay

    def __reduce__(self):
        return (type(self), (str(self), self.delay))
