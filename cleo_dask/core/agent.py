"""The agent: a small picklable context handed to every task of a run."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from cleo_dask.admission.concurrency import agent_id, check_max_concurrency
from cleo_dask.errors import WorkflowError


@dataclass(frozen=True)
class Agent:
    """An agent of the Cleo framework, as far as the scheduler needs to know it.

    ``id`` names the agent in logs, monitoring and run history; ``config`` is free-form context
    the tasks read (``agent.config["topic"]``).  ``max_concurrency`` bounds how many of the
    agent's tasks run at once across the cluster (``None``: no bound).  The agent is shipped to
    the cluster once per run, so it must pickle (cloudpickle).
    """

    id: str
    config: dict[str, Any] = field(default_factory=dict)
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise WorkflowError(f"Agent id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.config, Mapping):
            raise WorkflowError(f"Agent {self.id!r}: config must be a mapping (e.g. a dict), "
                                f"got {type(self.config).__name__}")
        check_max_concurrency(self.max_concurrency, f"Agent {self.id!r}: max_concurrency")


def check_picklable(agent: Any) -> None:
    """Raise :class:`WorkflowError` if ``agent`` cannot be shipped to the cluster."""
    try:
        cloudpickle.dumps(agent)
    except Exception as exc:  # noqa: BLE001 - any pickling failure is the same user error
        name = getattr(agent, "id", type(agent).__name__)
        raise WorkflowError(f"agent {name!r} cannot be pickled and so cannot be sent to the cluster: {exc}") from exc


__all__ = ["Agent", "agent_id", "check_picklable"]
