"""Task functions for the spec files in this folder (importable as ``pipeline_tasks`` when this
folder is on PYTHONPATH, as the CLI tests and the multi-host test arrange for workers too)."""
from __future__ import annotations

import time


def fetch(agent):
    """The documents to work on: ``agent.config["n"]`` numbers."""
    return list(range(agent.config.get("n", 3)))


def has_items(fetch):
    """Condition: there is something to summarise."""
    return bool(fetch)


def where_am_i(agent):
    """Work a little, then say which worker did it (its address) and a value."""
    time.sleep(agent.config.get("work", 0.2))
    from distributed import get_worker
    return {"worker": get_worker().address, "sum": sum(range(agent.config.get("n", 3)))}


def combine(agent, **parts):
    """Gather the parts (and ignore ``fetch``): total and the set of workers that ran them."""
    parts.pop("fetch", None)
    return {"total": sum(p["sum"] for p in parts.values() if isinstance(p, dict)),
            "workers": sorted({p["worker"] for p in parts.values() if isinstance(p, dict)}),
            "parts": len(parts)}


def summarize(agent, fetch):
    """A summary of the fetched items."""
    return f"{agent.id}: {len(fetch)} items"


def boom(agent, **_):
    """Always fails."""
    raise ValueError("boom: the model refused")


def rescue(agent, error, **_):
    """Fallback: a stand-in result naming the error."""
    return f"fallback after {type(error).__name__}"


def slow(agent, **_):
    """Takes a while (for --no-wait and progress tests)."""
    time.sleep(agent.config.get("slow", 1.0))
    return "slow done"


def workflow():
    """A Workflow built in Python (for ``cleo-dask run pipeline_tasks:workflow``)."""
    import cleo_dask as cd
    wf = cd.Workflow("python-built")
    wf.add(fetch)
    wf.add(summarize, after=["fetch"], when=has_items)
    return wf


NOT_A_WORKFLOW = 42


def report(agent, **inputs):
    """Reports what upstream produced (runs whatever happened upstream, with trigger all_done)."""
    return {name: ("failed" if not value and value is not None and not isinstance(value, (list, str)) else "ok")
            for name, value in inputs.items()}


def plan(agent, question, depth=1):
    """A plan for ``question`` (a workflow parameter; ``depth``, with a default, an optional one)."""
    return f"plan {depth} for {question}"


def answer(agent, plan, question, tone="plain"):
    """An inner node taking the ``question`` parameter besides its parent's result."""
    return f"{tone} answer to {question!r} after {plan!r}"


def double(agent, item):
    """One element of a mapped result, doubled (``mapped.yaml``)."""
    return 2 * item


def add_up(agent, double):
    """The doubled elements, summed (``mapped.yaml``)."""
    return sum(double)
