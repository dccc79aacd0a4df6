"""What a cluster needs for I/O-bound agents, set on the clusters the engine starts and checked
(with a warning) on the clusters it connects to.

* **cleo_dask on the scheduler and the workers, one version.**  Workers run cleo's task wrapper
  (including the coroutine that frees the slot of I/O tasks, :mod:`cleo_dask.admission.io`); the
  scheduler runs the admission plugin for ``max_concurrency`` / ``rate_limit``
  (:mod:`cleo_dask.admission.plugin`) and evaluates cleo's per-key annotations.
* **No root-task queuing** (``distributed.scheduler.worker-saturation: inf`` on the scheduler).
  With queuing, Dask holds back tasks it deems "root-ish" (from the size of their task group, i.e.
  how many runs use the same node name) while it sends the others to the workers at once; a
  queued task then waits until the workers' backlog of dispatched tasks drains, whatever its
  priority.  A small agent whose node names are common would wait for a big agent's whole
  backlog.  Without queuing every ready task is dispatched and each worker runs its ready
  tasks in priority order, so fair-share ranks (:mod:`cleo_dask.admission.fair`) and ``priority=`` hold;
  I/O tasks also start without a scheduler round trip per task.  (Queuing protects memory when
  root tasks produce big data; agent tasks pass small values.)

``Engine()`` starts its ``LocalCluster`` with ``worker-saturation`` taken from
``cleo_dask.local-cluster.worker-saturation`` (default ``inf``).  For a remote cluster start the
scheduler with ``DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION=inf`` (or the same key in its
Dask config) and install cleo_dask everywhere.  ``Engine(address=...)`` / ``Engine(client=...)``
warn (:class:`ClusterWarning`, once per scheduler address in a process) when cleo_dask is missing
there or of another version; about queuing only when a run that needs it (async, ``io_bound``,
``rate_limit`` tasks, an agent's ``max_concurrency``) is submitted, else at DEBUG level.
"""
from __future__ import annotations

import logging
import math
import warnings
from typing import Any

from cleo_dask import config as _config
from cleo_dask.version import __version__

logger = logging.getLogger("cleo_dask")


class ClusterWarning(UserWarning):
    """The cluster lacks something cleo_dask needs for I/O-bound agents (see the message)."""


def scheduler_settings() -> dict[str, Any]:
    """Dask config for the scheduler of a cluster the engine starts."""
    sat = (_config.get("local-cluster", {}) or {}).get("worker-saturation", "inf")
    return {"distributed.scheduler.worker-saturation": "inf" if sat is None else sat}


def _scheduler_facts(dask_scheduler: Any = None) -> dict[str, Any]:
    return {"version": __version__, "saturation": dask_scheduler.WORKER_SATURATION}


def _worker_version() -> str:
    return __version__


def problems(client: Any) -> list[str]:
    """What ``client``'s cluster lacks, as sentences (empty: nothing)."""
    essential, io = _find(client)
    return essential + io


def _find(client: Any) -> tuple[list[str], list[str]]:
    """What the cluster lacks: for every run (cleo_dask there, one version), and for I/O-bound runs."""
    essential: list[str] = []
    io: list[str] = []
    try:
        facts = client.run_on_scheduler(_scheduler_facts)
    except Exception as exc:  # noqa: BLE001 - typically cleo_dask missing on the scheduler
        essential.append(f"cleo_dask cannot run on the scheduler ({type(exc).__name__}: {exc}): install it there; "
                         "max_concurrency and rate_limit need it")
        facts = None
    if facts is not None:
        if facts["version"] != __version__:
            essential.append(f"the scheduler has cleo_dask {facts['version']}, this client {__version__}")
        if not math.isinf(facts["saturation"]):
            io.append(f"the scheduler queues root-ish tasks (distributed.scheduler.worker-saturation = "
                      f"{facts['saturation']}): a small agent can wait for a big agent's backlog and I/O "
                      "tasks start slower; start it with DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION=inf")
    try:
        versions = client.run(_worker_version)
    except Exception as exc:  # noqa: BLE001
        essential.append(f"cleo_dask cannot run on the workers ({type(exc).__name__}: {exc}): install it there")
    else:
        odd = sorted(w for w, v in versions.items() if v != __version__)
        if odd:
            essential.append(f"{len(odd)} worker(s) have another cleo_dask version than this client, e.g. {odd[0]}")
    return essential, io


_found: dict[str, tuple[list[str], list[str]]] = {}   # scheduler address -> what it lacks (asked once)
_warned: set[str] = set()                            # addresses warned about for I/O-bound runs


def _address(client: Any) -> str:
    return str(getattr(getattr(client, "scheduler", None), "address", None) or id(client))


def check_cluster(client: Any) -> list[str]:
    """When an engine connects (once per scheduler address in this process): warn
    (:class:`ClusterWarning`) about what every run needs; what only I/O-bound runs need is logged at
    DEBUG here and warned about by :func:`check_run` when such a run is submitted."""
    address = _address(client)
    if address in _found:
        return []
    essential, io = _found[address] = _find(client)
    if essential:
        warnings.warn("cleo_dask: this cluster cannot run cleo_dask as it should: " + "; ".join(essential),
                      ClusterWarning, stacklevel=3)
    if io:
        logger.debug("cleo_dask: cluster %s is not set up for I/O-bound agents (warned when a run needs it): %s",
                     address, "; ".join(io))
    return essential + io


def check_run(client: Any, workflow: Any, agent: Any) -> None:
    """At submit: warn (:class:`ClusterWarning`, once per scheduler address) when the run has
    async, ``io_bound`` or ``rate_limit`` tasks, or its agent a ``max_concurrency``, and the
    cluster lacks what they need.  Free once warned, or for a cluster that lacks nothing."""
    address = _address(client)
    found = _found.get(address)
    if not found or not found[1] or address in _warned or not needs_io(workflow, agent):
        return
    _warned.add(address)
    warnings.warn("cleo_dask: this cluster is not set up for I/O-bound agents: " + "; ".join(found[1]),
                  ClusterWarning, stacklevel=4)


def needs_io(workflow: Any, agent: Any) -> bool:
    """Whether a run of ``workflow`` for ``agent`` has what I/O-bound agents need a cluster for."""
    if getattr(agent, "max_concurrency", None) is not None:
        return True
    for node in workflow.nodes.values():
        spec = node.task
        while spec is not None:
            if spec.is_async or spec.io_bound or spec.rate_limit:
                return True
            spec = spec.fallback
    return False
