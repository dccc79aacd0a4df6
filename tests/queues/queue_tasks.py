"""Tasks for the queue tests (importable as ``queue_tasks`` by workers and consumer processes)."""
from __future__ import annotations

import os
import time

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


def _append(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@cd.task
def first(agent, log):
    """Logs itself; 1."""
    _append(log, "first")
    return 1


@cd.task
def second(agent, first, log, flag):
    """Waits until the file ``flag`` exists, logs itself; ``first + 1``."""
    while not os.path.exists(flag):
        time.sleep(0.05)
    _append(log, "second")
    return first + 1
