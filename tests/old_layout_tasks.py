"""Tasks of the run kept in ``tests/data/old_layout_store`` (written by cleo_dask before its
modules moved into subpackages); ``tests/durable/test_persisted_layout.py`` resumes that run."""
from __future__ import annotations

import cleo_dask as cd


def first(agent, question: str = "?") -> str:
    """A root taking a workflow parameter."""
    return f"first({question})"


def recover(agent, error, **inputs) -> str:
    """The fallback of :func:`second`."""
    return "recovered"


@cd.task(retries=2, backoff=cd.exponential(0.01, max=0.05), timeout=30, fallback=recover, cache=False)
def second(agent, first: str) -> str:
    """A child with every policy the task spec keeps (retry, backoff, timeout, fallback)."""
    return f"second({first}, {agent.config['suffix']})"


def third(agent, first: str) -> str:
    """A child that runs on its trigger rule."""
    return f"third({first})"
