"""Example tasks for deploy/workflows/example.yaml (stand-ins for an agent's real tools)."""
from __future__ import annotations

import socket


def find_sources(agent):
    """The sources to read for the agent's topic."""
    topic = agent.config.get("topic", "dask")
    return [f"{topic}-source-{i}" for i in range(agent.config.get("sources", 3))]


def has_sources(find_sources):
    """Condition: there is something to read."""
    return bool(find_sources)


def read_source(agent, find_sources):
    """Read every source (here: count characters) and say which host did it."""
    return {"chars": sum(len(s) for s in find_sources), "host": socket.gethostname()}


def summarize(agent, read_source):
    """A one-line summary."""
    return f"{agent.id} read {read_source['chars']} characters on {read_source['host']}"


def short_summary(agent, error, **inputs):
    """Fallback when summarizing fails for good."""
    return f"{agent.id}: no summary ({type(error).__name__})"
