"""Import paths (``"package.module:name"``): resolved with importlib, never evaluated."""
from __future__ import annotations

import importlib
from typing import Any

from cleo_dask.errors import WorkflowError


def resolve(path: str, error: type[Exception] = WorkflowError) -> Any:
    """The object at ``"package.module:attr.sub"``; ``error`` (a CleoError) naming what is wrong."""
    if not isinstance(path, str) or ":" not in path:
        raise error(f"import path {path!r} must look like 'package.module:name'")
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise error(f"import path {path!r} must look like 'package.module:name'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(f"import path {path!r}: cannot import module {module_name!r} ({exc})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise error(f"import path {path!r}: module {module_name!r} has no attribute {attr!r}") from None
    return obj
