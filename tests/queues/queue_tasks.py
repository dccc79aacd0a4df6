"""Tasks for the queue tests (importable as ``queue_tasks`` by workers and consumer processes)."""
from __future__ import annotations

import cleo_dask as cd


@cd.task
def echo(agent, x):
    """Returns its input."""
    return x


@cd.task
def noop(agent):
    """Does nothing (the benchmark's one-node run)."""
    return None


@cd.task
def opaque(agent, echo=None, x=None):
    """A value that does not serialise as JSON (sent by reference)."""
    return {echo, x}


@cd.task
def boom(agent, x):
    """Fails."""
    raise ValueError(f"boom {x}")
