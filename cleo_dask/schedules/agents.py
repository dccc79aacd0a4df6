"""How a schedule keeps its agent: bytes in a persistent store (JSON for a plain :class:`Agent`,
else a pickle by reference), read back by the process that fires it; or a YAML / JSON agent file."""
from __future__ import annotations

import json
import pickle
from typing import Any

from cleo_dask.core.agent import Agent
from cleo_dask.errors import ScheduleError, WorkflowError


def agent_to_bytes(agent: Any) -> tuple[bytes, str]:
    """Serialize an agent for a persistent store: JSON for a plain :class:`Agent`, else pickle by reference;
    the bytes and their format (``"json"`` / ``"pickle"``)."""
    if isinstance(agent, Agent):
        try:
            return json.dumps({"id": agent.id, "config": agent.config,
                               "max_concurrency": agent.max_concurrency}).encode(), "json"
        except (TypeError, ValueError):
            pass
    cls = type(agent)
    if cls.__module__ == "__main__":
        raise ScheduleError(f"agent {getattr(agent, 'id', agent)!r} is an instance of {cls.__qualname__!r} defined in "
                            "__main__ (a notebook or script): a persistent store can keep only agents whose class "
                            "can be imported by another process; define it in a module or use a cd.Agent")
    try:
        data = pickle.dumps(agent)
        pickle.loads(data)
    except Exception as exc:  # noqa: BLE001 - any pickling failure is the same user error
        raise ScheduleError(f"agent {getattr(agent, 'id', agent)!r} cannot be kept in a persistent store: it does "
                            f"not pickle ({exc})") from exc
    return data, "pickle"


def agent_from_bytes(data: bytes | None, fmt: str | None) -> Any:
    """The agent :func:`agent_to_bytes` stored (a default agent if none)."""
    if data is None:
        return Agent("default")
    if fmt == "json":
        d = json.loads(data)
        return Agent(d["id"], config=d.get("config") or {}, max_concurrency=d.get("max_concurrency"))
    from cleo_dask.durable.unpickle import loads  # also an agent pickled by the flat module layout
    return loads(data, where="a schedule store's agent", schema="schedule store schema 1")


def agent_from_file(path: str) -> Agent:
    """An :class:`Agent` from a YAML or JSON file (``id``, ``config``, ``max_concurrency``), read as
    ``cleo-dask run --agent-file`` reads it; a :class:`ScheduleError` listing its problems."""
    from cleo_dask.core.spec import load_agent
    try:
        return load_agent(path)
    except WorkflowError as exc:
        raise ScheduleError(str(exc)) from None
