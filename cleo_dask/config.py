"""cleo_dask's settings live in Dask's config, under ``cleo_dask`` (see ``cleo_dask.yaml``)."""
from __future__ import annotations

import os
from typing import Any

import dask.config
import yaml

_FILE = os.path.join(os.path.dirname(__file__), "cleo_dask.yaml")

with open(_FILE) as _f:
    DEFAULTS: dict[str, Any] = yaml.safe_load(_f)

dask.config.update_defaults(DEFAULTS)


def get(name: str, default: Any = None) -> Any:
    """``dask.config.get("cleo_dask." + name)``."""
    return dask.config.get(f"cleo_dask.{name}", default=default)
