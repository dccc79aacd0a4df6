"""Tasks of ``hosted.yaml``: a run carried by the scheduler (``cleo-dask run --no-wait``) must end
as a waited one, policy by policy (``tests/runs/test_hosted.py``)."""
from __future__ import annotations

import os


def fetch(agent):
    """A few numbers."""
    return [1, 2, 3]


def flaky(agent, fetch, marker):
    """Fails on its first attempt (``marker``: a file that does not exist yet), then sums."""
    if not os.path.exists(marker):
        with open(marker, "w", encoding="utf-8") as f:
            f.write("failed once\n")
        raise ConnectionError("flaky: first attempt fails")
    return sum(fetch)


def boom(agent, **_):
    """Always fails."""
    raise ValueError("boom")


def rescue(agent, error, **_):
    """The fallback of ``risky``: a stand-in value naming the error."""
    return f"rescued from {type(error).__name__}"


def use(agent, risky):
    """A child of the fallback: it gets the fallback's value."""
    return f"used {risky!r}"


def report(agent, **parents):
    """``all_done``: runs whatever its parents did; says what it got."""
    return {name: (value if value else type(value).__name__) for name, value in sorted(parents.items())}
