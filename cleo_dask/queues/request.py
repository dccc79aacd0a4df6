"""A run request as JSON: read and checked (pure), and the run id its request id maps to.

``{"id": "...", "target": "mypkg.flows:research" | {spec document}, "agent": {...},
"inputs": {...}, "priority": 0, "name": "..."}``: ``id`` and ``target`` are required.  A bad
request raises :class:`BadRequest` naming the field; the consumer answers it on the results
stream and acknowledges it.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from cleo_dask.errors import WorkflowError

#: The fields a request may have.
FIELDS = ("id", "target", "agent", "inputs", "priority", "name")


class BadRequest(WorkflowError):
    """A request that cannot become a run (bad JSON, a missing or bad field, an unknown target,
    an invalid spec); ``request_id`` is its id when it could be read."""

    def __init__(self, message: str, request_id: str | None = None):
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True)
class Request:
    """A checked request (the target is not resolved yet: see the consumer)."""

    id: str
    target: Any
    agent: dict[str, Any] | str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    priority: float = 0
    name: str | None = None

    @property
    def run_id(self) -> str:
        """The run's id in the journal: the idempotency key of this request (see :func:`run_id_for`)."""
        return run_id_for(self.id)


def run_id_for(request_id: str) -> str:
    """The run id of request ``request_id``: ``q`` and 15 hex digits of its SHA-256, the shape of
    any run id (a request id may hold any character and length)."""
    return "q" + hashlib.sha256(request_id.encode()).hexdigest()[:15]


def parse(body: bytes | str) -> Request:
    """The request in ``body``; :class:`BadRequest` naming what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"request must be a JSON object, got {type(data).__name__}")
    rid = data.get("id")
    if not isinstance(rid, str) or not rid:
        raise BadRequest(f"request 'id' must be a non-empty string, got {rid!r}",
                         rid if isinstance(rid, (str, int)) and rid != "" else None)
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise BadRequest(f"request {rid!r}: unknown field(s) {', '.join(map(repr, unknown))} "
                         f"(fields: {', '.join(FIELDS)})", rid)
    target = data.get("target")
    if not (isinstance(target, str) and ":" in target) and not isinstance(target, dict):
        raise BadRequest(f"request {rid!r}: 'target' must be 'package.module:name' or a spec document "
                         f"(an object with 'nodes'), got {target!r}", rid)
    agent = data.get("agent")
    if agent is not None and not isinstance(agent, (dict, str)):
        raise BadRequest(f"request {rid!r}: 'agent' must be an object (id, config, max_concurrency) or an id, "
                         f"got {agent!r}", rid)
    inputs = data.get("inputs") or {}
    if not isinstance(inputs, dict):
        raise BadRequest(f"request {rid!r}: 'inputs' must be an object, got {inputs!r}", rid)
    priority = data.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, (int, float)) or not math.isfinite(priority):
        raise BadRequest(f"request {rid!r}: 'priority' must be a finite number, got {priority!r}", rid)
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise BadRequest(f"request {rid!r}: 'name' must be a string, got {name!r}", rid)
    return Request(rid, target, agent, dict(inputs), float(priority), name)


def request_id_of(body: bytes | str) -> str | None:
    """The id of a request that may be bad, if it can be read (to answer it)."""
    try:
        rid = json.loads(body).get("id")
    except Exception:  # noqa: BLE001 - not JSON, not an object
        return None
    return rid if isinstance(rid, str) and rid else None
