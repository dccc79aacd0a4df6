"""A checked request turned into :meth:`Engine.submit` arguments: its agent read as an agent file
is, a spec document validated as a spec file is (the request's own fields win over the spec's)."""
from __future__ import annotations

from typing import Any

from cleo_dask.core.agent import Agent
from cleo_dask.core.agentfile import read_agent
from cleo_dask.core.spec import spec_from_data
from cleo_dask.core.specproblems import Problems, Where
from cleo_dask.queues.request import BadRequest, Request


def agent_of(request: Request) -> Agent | None:
    """The request's agent (``None``: the spec's, or the default one)."""
    if request.agent is None:
        return None
    where = f"request {request.id!r}"
    problems = Problems(where)
    agent = read_agent(request.agent, Where(where, ("agent",)), problems)
    if problems.items or agent is None:
        raise BadRequest("; ".join(problems.items) or f"{where}: bad agent", request.id)
    return agent


def submit_arguments(request: Request) -> dict[str, Any]:
    """``target``, ``agent``, ``priority``, ``fail_fast``, ``name``, ``inputs`` and ``run_id`` of the run."""
    agent = agent_of(request)
    args: dict[str, Any] = {"priority": request.priority, "name": request.name or request.id,
                            "run_id": request.run_id, "inputs": dict(request.inputs)}
    if isinstance(request.target, dict):
        spec = spec_from_data(request.target, f"request {request.id!r} target", agent=agent)
        args.update(target=spec.workflow, agent=spec.agent, fail_fast=spec.fail_fast,
                    inputs={**spec.inputs, **request.inputs})
        if not request.priority:
            args["priority"] = spec.priority
    else:
        args.update(target=request.target, agent=agent)
    return args
