"""The schedules' settings (``cleo_dask.schedules.*`` in Dask's config) and limits."""
from __future__ import annotations

from typing import Any

from cleo_dask import config as _config

#: At most this many past fire times of one schedule are examined per tick (the rest next tick).
MAX_CATCH_UP = 100_000


class _Unset:
    def __repr__(self) -> str:
        return "<config default>"


#: "not given": the ``cleo_dask.schedules`` config decides (see :func:`cleo_dask.schedules.build.make_options`)
UNSET: Any = _Unset()


def setting(name: str, default: Any) -> Any:
    """The config value ``cleo_dask.schedules.<name>`` (``default`` if unset)."""
    return _config.get(f"schedules.{name}", default)
