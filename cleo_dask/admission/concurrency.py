"""An agent's concurrency bound: the option ``max_concurrency`` and the agent id it is keyed by.

``max_concurrency`` bounds how many of an agent's tasks run at once across the cluster; the
admission plugin keeps one limit per agent id (``agent:<id>``).
"""
from __future__ import annotations

from typing import Any

from cleo_dask.util.numbers import count

#: The agent's options (``cd.Agent(...)`` and agent files), in the order they are listed to users.
AGENT_OPTIONS = ("id", "config", "max_concurrency")


def check_max_concurrency(value: Any, field: str = "max_concurrency") -> int | None:
    """``value`` if it is ``None`` (no bound) or an integer >= 1; else :class:`WorkflowError`
    naming ``field`` (an empty ``field``: the message starts with "must be")."""
    if value is None:
        return None
    return count(value, field, minimum=1)


def agent_id(agent: Any) -> str:
    """The id used for ``agent`` in events, history and limits (``str(agent)`` for an object
    without an ``id``)."""
    return str(getattr(agent, "id", agent))
