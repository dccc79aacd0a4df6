"""Outcome messages, built from the journal (so one is sent only once the run's end is journaled).

``{"id", "run_id", "status", "nodes": {name: {"status", "attempts", "error"?, "note"?}},
"results": {sink: JSON value}, "refs": {sink: result file}, "sent": epoch seconds}``: sink values that serialise as JSON
travel in the message, others by reference (their file in the result store).  A rejected request:
``{"id", "status": "rejected", "error", "error_type", "message_id"}``.
"""
from __future__ import annotations

import json
from typing import Any

from cleo_dask.durable.journal import FINISHED
from cleo_dask.errors import StoreError

#: Run statuses after which a run's outcome can be published.
ENDED = ("succeeded", "failed", "cancelled")
#: Largest JSON value (characters) carried in a message; bigger ones go by reference.
MAX_INLINE = 256 * 1024


def rejection(request_id: str | None, error: BaseException, message_id: str) -> dict[str, Any]:
    """The answer to a request that could not become a run."""
    return {"id": request_id, "status": "rejected", "error": str(error), "error_type": type(error).__name__,
            "message_id": message_id}


def from_journal(durable: Any, request_id: str, run_id: str, sinks: list[str], status: str | None = None,
                 resumes: int = 0) -> dict[str, Any]:
    """The outcome message of journaled run ``run_id`` (``durable``: the engine's Durability);
    ``status`` and ``resumes``: the run's, when already read from the journal."""
    journal = durable.journal
    if status is None:
        record = journal.run(run_id)
        status, resumes = record.status, record.resumes
    rows = journal.nodes(run_id)
    errors: dict[str, str] = {}
    if status != "succeeded":
        for node, _n, _s, _e, _w, error, error_type in journal.attempts(run_id):
            if error:
                errors[node] = f"{error_type}: {error}" if error_type else str(error)
    nodes: dict[str, Any] = {}
    for name, row in rows.items():
        entry: dict[str, Any] = {"status": row.status, "attempts": row.attempts}
        if name in errors and row.status not in FINISHED:
            entry["error"] = errors[name]
        if row.note:
            entry["note"] = row.note
        nodes[name] = entry
    results, refs = {}, {}
    for name in sinks:
        row = rows.get(name)
        if row is None or row.status not in FINISHED or not row.result:
            continue
        try:
            value = durable.results.load(row.result).value
            text = json.dumps(value)
        except (StoreError, TypeError, ValueError, AttributeError):
            refs[name] = row.result
            continue
        if len(text) > MAX_INLINE:
            refs[name] = row.result
        else:
            results[name] = value
    return {"id": request_id, "run_id": run_id, "status": status, "resumes": resumes,
            "nodes": nodes, "results": results, "refs": refs}


def sinks_of(workflow: Any) -> list[str]:
    """The workflow's sink nodes (no child)."""
    parents = {p for node in workflow.nodes.values() for p in node.parents}
    return [name for name in workflow.nodes if name not in parents]
