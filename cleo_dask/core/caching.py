"""The option ``cache`` of a task: whether, and under which key, a stored result is reused.

``cache=True`` keys a result by the task's inputs; a function ``(agent, **inputs) -> key`` gives
the key itself.  The result store (``cleo_dask.durable.resultstore``) does the reusing.
"""
from __future__ import annotations

from typing import Any

from cleo_dask.errors import WorkflowError
from cleo_dask.util.options import OptionPolicy


class CacheOptions(OptionPolicy):
    """The option ``cache`` (not settable from spec files: a key function is code)."""

    names = ("cache",)

    @property
    def file_names(self) -> tuple[str, ...]:
        """None: a spec file cannot give a key function."""
        return ()

    def check(self, options: Any, what: str) -> None:
        """``cache``: True, False or a callable."""
        if not isinstance(options.cache, bool) and not callable(options.cache):
            raise WorkflowError(f"{what}: cache must be True, False or a key function (agent, **inputs) -> key, "
                                f"got {options.cache!r}")


#: The cache policy's option.
CACHE_OPTIONS = CacheOptions()
