"""The picture of a live run: its workflow drawn by :mod:`cleo_dask.core.picture`, each node
coloured by the state this module reads (the outcome once done, else the scheduler monitor's
view, else the client's futures)."""
from __future__ import annotations

from typing import Any

from cleo_dask.core.picture import WorkflowImage, draw_workflow
from cleo_dask.monitor.state import snapshot

_FUTURE_STATES = {"finished": "succeeded", "error": "failed", "cancelled": "cancelled"}


def visualize_run(run: Any, client: Any) -> WorkflowImage:
    """The picture of a :class:`Run` (submitted through ``client``): nodes coloured by their current state."""
    return draw_workflow(run.workflow, states=node_states(run, client), title=f"{run.name} — run {run.id}")


def node_states(run: Any, client: Any) -> dict[str, str]:
    """Each node's state: final statuses once the run is done, else the scheduler monitor's live
    view (running, retrying...), else what the client's futures say."""
    if run.done():
        return {n: res.status.value for n, res in run.result().items()}
    live = _monitored_states(run.id, client)
    if live is not None:
        return live
    futures = run.futures
    return {n: _FUTURE_STATES.get(futures[n].status, "pending") if n in futures else "pending"
            for n in run.workflow.nodes}


def _monitored_states(run_id: str, client: Any) -> dict[str, str] | None:
    try:
        snap = client.run_on_scheduler(snapshot, run_id)
    except Exception:  # noqa: BLE001 - no monitor on this scheduler
        return None
    if "run" not in snap:
        return None
    return {n: d["state"] for n, d in snap["run"]["nodes"].items()}
