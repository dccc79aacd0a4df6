"""Signal nodes: a node done when a signal arrives (``wf.add_signal("approval", after=[s])``).

A signal node is an ordinary node whose task is built in (:func:`signal_spec`).  The compiler
marks its unit with a ``signal`` admission annotation, so the scheduler's admission plugin holds
it (in ``no-worker``, on no worker, holding no slot: :mod:`cleo_dask.admission.signals`) until
``engine.signal(run_id, name, value)`` delivers the value, or its ``timeout`` passes.  Only then
does it run: its body reads the value the plugin kept in the scheduler's task metadata and
returns it (a timeout raises :class:`SignalTimeout`, and the children's trigger rules apply).
"""
from __future__ import annotations

import math
from typing import Any

from cleo_dask.errors import TaskTimeout, WorkflowError

#: where the admission plugin keeps a delivered value: the scheduler's task metadata under
#: ``[METADATA, run_id, name]`` -> ``{"value": v}`` or ``{"timeout": seconds}``
METADATA = "cleo-signal"


class SignalTimeout(TaskTimeout):
    """A signal node's wait ended without its signal (its ``timeout`` passed)."""


class SignalBody:
    """The body of a signal node: returns the value delivered for ``name`` (its parents' results
    are accepted and ignored).  Runs only once the scheduler released the node."""

    def __init__(self, name: str, timeout: float | None):
        self.name = name
        self.timeout = timeout
        self.__name__ = self.__qualname__ = f"signal:{name}"
        self.__module__ = __name__

    def __call__(self, agent: Any, **upstream: Any) -> Any:
        from cleo_dask.core.current import current_node
        here = current_node()
        if here is None:
            raise WorkflowError(f"signal node {self.name!r} only runs inside a cleo run")
        box = read_metadata([METADATA, here.run_id, self.name])
        if box is None or "value" not in box:
            waited = (box or {}).get("timeout", self.timeout)
            raise SignalTimeout(f"signal {self.name!r} did not arrive within {waited:g} s" if waited is not None
                                else f"signal {self.name!r} did not arrive")
        return box["value"]

    def __reduce__(self):
        return (SignalBody, (self.name, self.timeout))

    def __repr__(self) -> str:
        return f"<signal {self.name!r} timeout={self.timeout}>"


def read_metadata(keys: list[Any]) -> Any:
    """The scheduler's task metadata under ``keys`` (``None`` if absent), read from a task."""
    from distributed import get_client
    return get_client().get_metadata(keys, default=None)


def check_timeout(name: str, timeout: Any) -> float | None:
    """``timeout`` (seconds, or ``None``: wait forever) checked; :class:`WorkflowError` naming the signal."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (timeout > 0 and math.isfinite(timeout)):
        raise WorkflowError(f"signal {name!r}: timeout must be a positive number of seconds or None, got {timeout!r}")
    return float(timeout)


def signal_spec(name: str, timeout: float | None = None) -> Any:
    """The built-in task of a signal node named ``name`` (no retries, never fused or batched)."""
    from cleo_dask.core.task import Signature, TaskSpec
    if not isinstance(name, str) or not name:
        raise WorkflowError(f"a signal name must be a non-empty string, got {name!r}")
    body = SignalBody(name, check_timeout(name, timeout))
    return TaskSpec(body, name, Signature.of(body), retries=0, batch=False)


def signal_of(spec: Any) -> tuple[str, float | None] | None:
    """``(name, timeout)`` if ``spec`` is a signal node's task, else ``None``."""
    fn = getattr(spec, "fn", None)
    return (fn.name, fn.timeout) if isinstance(fn, SignalBody) else None


def signal_nodes(wf: Any) -> dict[str, tuple[str, float | None]]:
    """The signal nodes of workflow ``wf``: node name -> (signal name, timeout)."""
    out = {}
    for name, node in wf.nodes.items():
        sig = signal_of(node.task)
        if sig is not None:
            out[name] = sig
    return out


def mark_signals(compiled: Any, wf: Any, run_id: str) -> None:
    """Give the unit of each signal node of ``wf`` compiled in ``compiled`` its ``signal`` admission
    annotation (the scheduler holds it until the signal of ``run_id`` arrives)."""
    signals = getattr(wf, "signals", None)
    if not signals:
        return
    from cleo_dask.admission.signals import with_signal
    for name, timeout in signals.items():
        where = compiled.location.get(name)
        if where is not None and where[0] in compiled.units:
            key = where[0]
            compiled.admission[key] = with_signal(compiled.admission.get(key), run_id, name, timeout)
