"""A spec file's signal nodes: ``signal: {name, timeout}`` (or ``signal: NAME``) instead of ``task:``.

The node is what :meth:`Workflow.add_signal` adds: done when signal ``name`` arrives
(``engine.signal`` / ``cleo-dask signal``), failing with ``SignalTimeout`` past ``timeout``
seconds.  Its node name is the signal's name (give either, or both the same).  Besides
``after`` it takes only ``trigger``.
"""
from __future__ import annotations

from typing import Any

from cleo_dask.core.signal import check_timeout
from cleo_dask.core.specproblems import Problems, Where
from cleo_dask.errors import WorkflowError

#: what a signal node may have besides ``signal`` (``after``, ``when``... are the node's own fields)
SIGNAL_KEYS = ("name", "signal", "after", "trigger")


def signal_name(raw: Any) -> str | None:
    """The signal name a node's ``signal:`` value gives (``None`` if it gives none)."""
    if isinstance(raw, str):
        return raw or None
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        return raw["name"] or None
    return None


def read_signal(node: str, data: dict[str, Any], where: Where, problems: Problems) -> dict[str, Any] | None:
    """``{"timeout": ...}`` for the signal node ``node`` (``data``: its raw fields); problems reported."""
    raw = data["signal"]
    at = where.at("signal", data)
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        problems.add(at, f"must be a signal name or a mapping {{name, timeout}}, got {raw!r}")
        return None
    ok = True
    for key in raw:
        if key not in ("name", "timeout"):
            problems.add(at, f"unknown key {key!r} (a signal has 'name' and 'timeout')")
            ok = False
    name = raw.get("name", node)
    if not isinstance(name, str) or not name:
        problems.add(at, f"'name' must be a non-empty string, got {name!r}")
        ok = False
    elif name != node:
        problems.add(at, f"the signal is named {name!r} but its node {node!r}: a signal node is named by its signal")
        ok = False
    for key in data:
        if key not in SIGNAL_KEYS and key != "task":   # 'task' as well: reported by the caller
            problems.add(where.at(key, data), f"a signal node takes only 'after' and 'trigger', not {key!r}")
            ok = False
    try:
        timeout = check_timeout(node, raw.get("timeout"))
    except WorkflowError as exc:
        problems.add(at, str(exc))
        return None
    return {"timeout": timeout} if ok else None
