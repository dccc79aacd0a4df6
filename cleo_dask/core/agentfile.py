"""Agent files (YAML or JSON with ``id``, ``config``, ``max_concurrency``), and a spec's ``agent:``."""
from __future__ import annotations

import os
from typing import Any

from cleo_dask.admission.concurrency import AGENT_OPTIONS, check_max_concurrency
from cleo_dask.core.agent import Agent
from cleo_dask.core.specproblems import Problems, Where, line_of, unknown_keys
from cleo_dask.core.specread import MISSING, read
from cleo_dask.errors import WorkflowError

#: The keys of an agent file (or of a spec's ``agent:`` mapping).
AGENT_KEYS = AGENT_OPTIONS


def load_agent(path: str | os.PathLike[str], *, problems: Problems | None = None) -> Agent:
    """An :class:`Agent` from a YAML or JSON file (``id``, ``config``, ``max_concurrency``).

    Raises :class:`WorkflowError` listing every problem, unless ``problems`` collects them.
    """
    path = os.fspath(path)
    own = problems is None
    probs = Problems(path) if own else problems
    agent = None
    data = read(path, probs, what="agent file")
    if data is not MISSING:
        agent = read_agent(data, Where(path, (), line_of(data)), probs)
    if own:
        probs.raise_if_any()
    return agent  # type: ignore[return-value]


def read_agent(data: Any, where: Where, problems: Problems) -> Agent | None:
    """The agent ``data`` describes (a mapping, or just an id), or ``None`` after reporting why not."""
    if isinstance(data, str):
        data = {"id": data}
    if not isinstance(data, dict):
        problems.add(where, f"the agent must be a mapping (id, config, max_concurrency) or an id, got {data!r}")
        return None
    unknown_keys(data, AGENT_KEYS, where, problems)
    ok = True
    if not isinstance(data.get("id"), str) or not data.get("id"):
        problems.add(where.at("id", data), f"the agent's id must be a non-empty string, got {data.get('id')!r}")
        ok = False
    config = data.get("config", {})
    if config is None:
        config = {}
    if not isinstance(config, dict):
        problems.add(where.at("config", data), f"must be a mapping, got {config!r}")
        ok = False
    mc = data.get("max_concurrency")
    try:
        check_max_concurrency(mc, "")
    except WorkflowError as exc:
        problems.add(where.at("max_concurrency", data), str(exc))
        ok = False
    if not ok:
        return None
    return Agent(data["id"], dict(config), mc)
