"""The client side of hosted runs: send a validated run to the scheduler's run host, and read a
hosted run back from any process (:class:`AttachedRun`).

See :mod:`cleo_dask.hosted.host` for the host itself.  :func:`detach_run` is what
``Engine.submit(..., detach=True)`` and ``cleo-dask run --no-wait`` do after validating;
:func:`attach` is ``Engine.attach(run_id)`` and ``cleo-dask runs show RUN_ID --address ...``.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import cloudpickle

from cleo_dask.core.outcome import Status, TaskResult
from cleo_dask.errors import ClusterError, WorkflowError
from cleo_dask.hosted import host as _host

#: seconds between two looks at a hosted run while waiting (each look waits on the scheduler too)
POLL = 0.2


class NoRunHost(ClusterError):
    """The scheduler cannot host runs (cleo_dask cannot be imported there)."""


def check_host(client: Any) -> None:
    """:class:`NoRunHost` unless cleo_dask can be imported on ``client``'s scheduler."""
    try:
        client.run_on_scheduler(_host.ping)
    except Exception as exc:  # noqa: BLE001 - ModuleNotFoundError there, or scheduler pickling off
        raise NoRunHost(f"the scheduler at {_address(client)} cannot host runs (cleo_dask must be importable "
                        f"there): {type(exc).__name__}: {exc}") from exc


def detach_run(client: Any, make_engine: Callable[..., Any], target: Any, agent: Any, options: dict[str, Any],
               store: str | os.PathLike[str] | None = None) -> AttachedRun:
    """Hand a validated run to the scheduler's run host; the :class:`AttachedRun` reading it.

    ``options``: :meth:`Engine.submit` keyword arguments; ``store``: a journal path the host keeps
    (made absolute: the scheduler may run elsewhere on this machine).  A bad store is a
    :class:`~cleo_dask.errors.StoreError` raised by the host, before anything is submitted."""
    check_host(client)
    store = os.path.abspath(os.fspath(store)) if store is not None else None
    blob = cloudpickle.dumps((target, agent, dict(options), store))
    run_id = client.run_on_scheduler(_host.host_submit, blob, make_engine)
    return attach(client, run_id)


def attach(client: Any, run_id: str) -> AttachedRun:
    """The hosted run ``run_id`` of ``client``'s scheduler; :class:`WorkflowError` if it hosts none."""
    run = AttachedRun(client, run_id)
    run.refresh()
    return run


class AttachedRun:
    """A run carried by the scheduler's run host, read from this process: :meth:`status`,
    :meth:`progress`, :meth:`done`, :meth:`wait` and :meth:`result` as on a :class:`~cleo_dask.Run`
    (the outcome comes with its values).  Nothing is cancelled when this process goes."""

    def __init__(self, client: Any, run_id: str):
        self.id = run_id
        self._client = client
        self._state: dict[str, Any] = {}

    def refresh(self, wait: float = 0) -> None:
        """Ask the host for the run's state (letting it finish for up to ``wait`` seconds first)."""
        if self._state.get("results") is not None:
            return   # final
        try:
            blob = self._client.run_on_scheduler(_host.host_report, self.id, wait)
        except Exception as exc:  # noqa: BLE001
            raise NoRunHost(f"cannot read run {self.id} from the scheduler at {_address(self._client)}: "
                            f"{type(exc).__name__}: {exc}") from exc
        if blob is None:
            raise WorkflowError(f"no run {self.id!r} on the scheduler at {_address(self._client)} "
                                "(unknown, or finished and dropped by its run host)")
        self._state = cloudpickle.loads(blob)

    @property
    def name(self) -> str:
        return self._state["name"]

    @property
    def agent(self) -> str:
        """The agent's id."""
        return self._state["agent"]

    @property
    def started(self) -> float:
        return self._state["started"]

    @property
    def ended(self) -> float | None:
        return self._state["ended"]

    def done(self) -> bool:
        """True once every node has its final state."""
        self.refresh()
        return self._state["results"] is not None

    def status(self) -> str:
        """``"running"``, ``"succeeded"``, ``"failed"``, ``"cancelled"`` or ``"interrupted"``."""
        self.refresh()
        return self._state["status"]

    def progress(self) -> dict[str, int]:
        """Counts of nodes by coarse state (``done``, ``error``, ``pending``, ``total``)."""
        self.refresh()
        return dict(self._state["progress"])

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run is done (True) or ``timeout`` seconds pass (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            self.refresh(wait=_host.MAX_REPORT_WAIT if left is None else max(0.0, min(left, _host.MAX_REPORT_WAIT)))
            if self._state["results"] is not None:
                return True
            if left is not None and left <= 0:
                return False
            time.sleep(POLL)

    def result(self, timeout: float | None = None) -> HostedOutcome:
        """The outcome (node -> :class:`TaskResult`, values included); :class:`TimeoutError` if the
        run is not done within ``timeout`` seconds."""
        if not self.wait(timeout):
            raise TimeoutError(f"run {self.id} not finished within {timeout} s")
        return HostedOutcome(self._state["results"])

    def __repr__(self) -> str:
        return f"<cleo_dask.AttachedRun {self.id} {self._state.get('name')!r} status={self._state.get('status')}>"


class HostedOutcome(Mapping[str, TaskResult]):
    """The outcome of a hosted run: node name -> :class:`TaskResult` (values already here)."""

    def __init__(self, results: Mapping[str, TaskResult]):
        self._results = dict(results)

    def __getitem__(self, node: str) -> TaskResult:
        return self._results[node]

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    def counts(self) -> dict[str, int]:
        """Number of nodes by status."""
        out: dict[str, int] = {}
        for r in self._results.values():
            out[r.status.value] = out.get(r.status.value, 0) + 1
        return out

    @property
    def ok(self) -> bool:
        """True if every node succeeded, fell back or was skipped."""
        fine = {Status.SUCCEEDED, Status.FELL_BACK, Status.SKIPPED, Status.UPSTREAM_FAILED}
        return all(r.status in fine for r in self._results.values())

    def failed(self) -> list[TaskResult]:
        """The results of the nodes that failed."""
        return [r for r in self._results.values() if r.status == Status.FAILED]


def _address(client: Any) -> str:
    return str(getattr(getattr(client, "scheduler", None), "address", None) or "?")
