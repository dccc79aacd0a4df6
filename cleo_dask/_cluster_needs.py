"""What a cluster needs for I/O-bound agents, set on the clusters the engine starts and checked
(with a warning) on the clusters it connects to.

* **cleo_dask on the scheduler and the workers, one version.**  Workers run cleo's task wrapper
  (including the coroutine that frees the slot of I/O tasks, :mod:`cleo_dask._io`); the
  scheduler runs the admission plugin for ``max_concurrency`` / ``rate_limit``
  (:mod:`cleo_dask._admission`) and evaluates cleo's per-key annotations.
* **No root-task queuing** (``distributed.scheduler.worker-saturation: inf`` on the scheduler).
  With queuing, Dask holds back tasks it deems "root-ish" (from the size of their task group, i.e.
  how many runs use the same node name) while it sends the others to the workers at once; a
  queued task then waits until the workers' backlog of dispatched tasks drains, whatever its
  priority.  A small agent whose node names are common would wait for a big agent's whole
  backlog.  Without queuing every ready task is dispatched and each worker runs its ready
  tasks in priority order, so fair-share ranks (:mod:`cleo_dask._fair`) and ``priority=`` hold;
  I/O tasks also start without a scheduler round trip per task.  (Queuing protects memory when
  root tasks produce big data; agent tasks pass small values.)

``Engine()`` starts its ``LocalCluster`` with ``worker-saturation`` taken from
``cleo_dask.local-cluster.worker-saturation`` (default ``inf``).  For a remote cluster start the
scheduler with ``DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION=inf`` (or the same key in its
Dask config) and install cleo_dask everywhere; ``Engine(address=...)`` / ``Engine(client=...)``
warn (:class:`ClusterWarning`, once per client) when this is not so.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

from . import _config


class ClusterWarning(UserWarning):
    """The cluster lacks something cleo_dask needs for I/O-bound agents (see the message)."""


def scheduler_settings() -> dict[str, Any]:
    """Dask config for the scheduler of a cluster the engine starts."""
    sat = (_config.get("local-cluster", {}) or {}).get("worker-saturation", "inf")
    return {"distributed.scheduler.worker-saturation": "inf" if sat is None else sat}


def _scheduler_facts(dask_scheduler: Any = None) -> dict[str, Any]:
    import cleo_dask
    return {"version": cleo_dask.__version__, "saturation": dask_scheduler.WORKER_SATURATION}


def _worker_version() -> str:
    import cleo_dask
    return cleo_dask.__version__


def problems(client: Any) -> list[str]:
    """What ``client``'s cluster lacks, as sentences (empty: nothing)."""
    import cleo_dask
    found: list[str] = []
    try:
        facts = client.run_on_scheduler(_scheduler_facts)
    except Exception as exc:  # noqa: BLE001 - typically cleo_dask missing on the scheduler
        found.append(f"cleo_dask cannot run on the scheduler ({type(exc).__name__}: {exc}): install it there; "
                     "max_concurrency and rate_limit need it")
        facts = None
    if facts is not None:
        if facts["version"] != cleo_dask.__version__:
            found.append(f"the scheduler has cleo_dask {facts['version']}, this client {cleo_dask.__version__}")
        if not math.isinf(facts["saturation"]):
            found.append(f"the scheduler queues root-ish tasks (distributed.scheduler.worker-saturation = "
                         f"{facts['saturation']}): a small agent can wait for a big agent's backlog and I/O "
                         "tasks start slower; start it with DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION=inf")
    try:
        versions = client.run(_worker_version)
    except Exception as exc:  # noqa: BLE001
        found.append(f"cleo_dask cannot run on the workers ({type(exc).__name__}: {exc}): install it there")
    else:
        odd = sorted(w for w, v in versions.items() if v != cleo_dask.__version__)
        if odd:
            found.append(f"{len(odd)} worker(s) have another cleo_dask version than this client, e.g. {odd[0]}")
    return found


_checked: set[str] = set()


def check_cluster(client: Any) -> list[str]:
    """Warn (:class:`ClusterWarning`, once per client) about what the cluster lacks."""
    ident = f"{getattr(client, 'id', id(client))}"
    if ident in _checked:
        return []
    _checked.add(ident)
    found = problems(client)
    if found:
        warnings.warn("cleo_dask: this cluster is not set up for I/O-bound agents: " + "; ".join(found),
                      ClusterWarning, stacklevel=3)
    return found
