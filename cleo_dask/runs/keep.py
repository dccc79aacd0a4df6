"""What a run keeps when its engine closes: its outcome, and its unread values fetched in one go.

``with cd.Engine() as engine: out = engine.submit(wf, agent).result()``, then ``out["x"].value``
after the block: values are fetched when read, from the cluster, which is gone by then (or, with
``Engine(client=...)``, no longer the engine's to use).  So :meth:`Engine.close` calls
:func:`keep_runs` before the client goes, with the runs still referenced (the engine holds
finished runs weakly, so a run nobody holds is gone already, its values with it):

* each finished run builds its outcome (statuses, attempts, timings: what ``result()`` returns);
* their values not read yet are fetched in ONE gather, newest run first, up to
  ``cleo_dask.close-fetch-limit`` bytes (as Dask estimates each value's size); values past it,
  or that cannot be fetched (a remote scheduler already gone), raise a :class:`CleoError` when
  read, saying how to keep them;
* every run is detached from the cluster (its futures released): ``result()`` then returns the
  kept outcome and ``status()`` the run's last status; a run that had not finished has no outcome.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from dask.utils import format_bytes, parse_bytes

from cleo_dask import config as _config
from cleo_dask.errors import CleoError


logger = logging.getLogger("cleo_dask")

HOW = ("read values before closing the engine, or get them with the outcome: "
       "run.result(fetch=True) fetches every value in one go")


class KeptRun(Protocol):
    """What keeping a :class:`cleo_dask.Run` at close uses of it (this module sits below the run)."""

    id: str
    started: float

    def done(self) -> bool: ...
    def result(self, timeout: float | None = None, fetch: bool = False) -> Any: ...
    def status(self) -> str: ...
    def cached_outcome(self) -> Any: ...
    def hold_outcome_weakly(self) -> None: ...
    def unread_futures(self) -> list[tuple[str, Any]]: ...
    def unkept_nodes(self) -> list[str]: ...
    def detach(self, values: Mapping[str, Any], detached: Detached) -> None: ...


class Detached:
    """What a run keeps once its engine closed (see the module docstring)."""

    __slots__ = ("outcome", "status", "reason")

    def __init__(self, outcome: Any, status: str, reason: str):
        self.outcome = outcome
        self.status = status
        self.reason = reason   # why a value not kept is gone, for the error

    def result(self, run_id: str, fetch: bool) -> Any:
        """The kept outcome (:class:`CleoError` if the run had not finished, or if ``fetch`` and
        some values were not kept)."""
        if self.outcome is None:
            raise CleoError(f"run {run_id} has no outcome: its engine closed before the run finished"
                            + (f" ({self.reason})" if self.reason else "")
                            + "; wait for runs (run.result()) before closing the engine")
        if fetch:
            missing = self.outcome.run.unkept_nodes()
            if missing:
                raise value_gone(run_id, ", ".join(repr(n) for n in missing[:5])
                                 + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""), self.reason)
        return self.outcome

    def value_gone(self, run_id: str, nodes: str) -> CleoError:
        """The error of reading a value of ``nodes`` (named) that was not kept at close."""
        return value_gone(run_id, nodes, self.reason or "its value was not kept")


def value_gone(run_id: str, nodes: str, reason: str) -> CleoError:
    """The error of reading a value that was not kept when the engine closed."""
    return CleoError(f"run {run_id}: the value of node {nodes} is gone: its engine is closed and {reason}; {HOW}")


def fetch_limit() -> int:
    """``cleo_dask.close-fetch-limit`` in bytes (a number or a string such as ``"256 MiB"``)."""
    raw = _config.get("close-fetch-limit", "256 MiB")
    try:
        limit = parse_bytes(raw) if isinstance(raw, str) else int(raw)
    except (TypeError, ValueError):
        raise CleoError(f"cleo_dask.close-fetch-limit must be a size in bytes (e.g. '256 MiB'), got {raw!r}") from None
    if limit < 0:
        raise CleoError(f"cleo_dask.close-fetch-limit must not be negative, got {raw!r}")
    return limit


def keep_engine_runs(client: Any, registry: Any, events: Any) -> None:
    """At :meth:`Engine.close`, before the client goes: keep what the runs still referenced
    need (:func:`keep_runs`) and retire the event topics of the engine's runs."""
    try:
        topics = _let_go(client, registry)
        keep_runs(client, registry.alive())
        if getattr(client, "status", None) == "running" and topics:
            for topic in topics:
                events.retire(topic)
            events.wait_sent(timeout=5)
    except Exception:  # noqa: BLE001 - closing must not fail
        logger.debug("keeping runs at close failed", exc_info=True)


def _let_go(client: Any, registry: Any) -> list[str]:
    """Drop what the engine itself holds of its runs (the registry's strong references, cached
    outcomes, event handlers), so that only runs referenced elsewhere stay; their topics."""
    from cleo_dask.core.events import run_topic
    from cleo_dask.runs.forget import mute
    runs = registry.alive()
    for run in runs:
        run.hold_outcome_weakly()
    topics = [run_topic(run.id) for run in runs]
    mute(client, topics)
    registry.hold_all_weakly()
    return topics


def keep_runs(client: Any, runs: Iterable[KeptRun]) -> None:
    """Keep the outcomes and unread values of ``runs`` (those still referenced at close), then
    detach them from the cluster.  Never raises: what cannot be kept raises when read."""
    runs = list(runs)
    if not runs:
        return
    usable = getattr(client, "status", None) == "running"
    reason = "" if usable else f"its cluster was already gone (client {getattr(client, 'status', None)})"
    outcomes: dict[str, Any] = {}
    for run in runs:
        try:
            if not usable:  # no call to a cluster that is gone: an outcome built already, if any
                cached = run.cached_outcome()
                if cached is not None:
                    outcomes[run.id] = cached
            elif run.done():
                outcomes[run.id] = run.result(timeout=0)
        except Exception:  # noqa: BLE001 - kept without an outcome
            logger.debug("run %s: no outcome at close", run.id, exc_info=True)
    kept: dict[str, Any] = {}
    if usable:
        try:
            kept, reason = _fetch(client, [r for r in runs if r.id in outcomes])
        except Exception as exc:  # noqa: BLE001
            reason = f"fetching its values at close failed ({type(exc).__name__}: {exc})"
            logger.warning("cleo_dask: values of runs still held could not be fetched at close: %s", exc)
    for run in runs:
        try:
            outcome = outcomes.get(run.id)
            run.detach(kept, Detached(outcome, _status(run) if outcome is not None else "cancelled", reason))
        except Exception:  # noqa: BLE001 - closing must not fail
            logger.debug("run %s: detaching at close failed", run.id, exc_info=True)


def _fetch(client: Any, runs: list[KeptRun]) -> tuple[dict[str, Any], str]:
    """One gather of the unread values of ``runs`` (newest first) within the size limit:
    ``(values by key, reason given for those left out)``."""
    limit = fetch_limit()
    wanted = [(key, fut) for run in sorted(runs, key=lambda r: r.started, reverse=True)
              for key, fut in run.unread_futures()]
    if not wanted:
        return {}, ""
    timeout = float(_config.get("close-fetch-timeout", 60))
    sizes = client.nbytes([k for k, _ in wanted], summary=False, callback_timeout=timeout)
    chosen, total = [], 0
    for key, fut in wanted:
        total += int(sizes.get(key, 0) or 0)
        if total > limit:
            break
        chosen.append((key, fut))
    reason = "" if len(chosen) == len(wanted) else (
        f"the values fetched at close (newest runs first) reached cleo_dask.close-fetch-limit "
        f"({format_bytes(limit)})")
    if not chosen:
        return {}, reason
    values = client.sync(client._gather, [f for _, f in chosen], callback_timeout=timeout)
    return dict(zip((k for k, _ in chosen), values)), reason


def _status(run: KeptRun) -> str:
    try:
        return run.status()
    except Exception:  # noqa: BLE001
        return "cancelled"
