"""One node of a workflow: its name, its task, its parents, its condition and trigger rule."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cleo_dask.core.task import TaskSpec
from cleo_dask.failures.rules import ALL_SUCCESS


@dataclass(frozen=True, slots=True)
class Node:
    """One node: its name, task, parents (in the order they were given), condition, trigger."""

    name: str
    task: TaskSpec
    parents: tuple[str, ...] = ()
    when: Callable[..., Any] | None = None
    trigger: str = ALL_SUCCESS
