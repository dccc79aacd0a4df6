"""Signal waits held on the scheduler: a signal node holds no worker while it waits.

A signal node's unit carries ``"signal": [run_id, name, timeout]`` in its ``cleo_admission``
annotation.  The admission plugin gates it like every annotated task; once its parents are done
(``no-worker``) it asks :class:`SignalWaits` whether to hold it.  It is held until
:func:`~cleo_dask.admission.signalsend.deliver` brings the value of ``(run_id, name)`` (kept in the scheduler's task metadata,
where the node's body reads it) or its timeout passes (the metadata then says so and the body
fails with ``SignalTimeout``); then the plugin admits it as usual.  Clients deliver through
:mod:`cleo_dask.admission.signalsend`.  A value delivered before the
node is ready (or before its graph arrives) is kept and used when it is.  A node cancelled or
forgotten while it waits leaves nothing behind but its timer, which is cancelled.
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

METADATA = "cleo-signal"   # same as cleo_dask.core.signal.METADATA (admission sits below core)
#: how many delivered values the scheduler keeps (oldest dropped first)
KEEP = 100_000


def with_signal(adm: dict[str, Any] | None, run_id: str, name: str, timeout: float | None) -> dict[str, Any]:
    """``adm`` (a unit's admission annotation or ``None``) marking the unit as waiting for a signal."""
    return {**(adm or {"limits": {}, "rates": {}}), "signal": [run_id, name, timeout]}


class SignalWaits:
    """The admission plugin's signal waits (scheduler side; its event loop only, no locks).

    ``admit(key)`` is the plugin's way to let a held key through (its usual queue, limits apply)."""

    def __init__(self, scheduler: Any, admit: Any):
        self.scheduler = scheduler
        self.admit = admit
        self.of_key: dict[Any, tuple[str, str, float | None]] = {}   # signal key -> (run_id, name, timeout)
        self.keys: dict[tuple[str, str], set[Any]] = {}              # (run_id, name) -> its keys
        self.names: dict[str, set[str]] = {}                         # run_id -> its signal names seen
        self.held: set[Any] = set()
        self.timers: dict[Any, Any] = {}
        self.values: OrderedDict[tuple[str, str], float] = OrderedDict()   # delivered -> when

    def add(self, key: Any, adm: dict[str, Any]) -> None:
        """``key`` (a unit just arrived) waits for the signal its annotation names."""
        run_id, name, timeout = adm["signal"]
        self.of_key[key] = (run_id, name, timeout)
        self.keys.setdefault((run_id, name), set()).add(key)
        self.names.setdefault(run_id, set()).add(name)

    def hold(self, key: Any) -> bool:
        """Whether to hold ``key`` (ready, gated) because its signal has not arrived yet."""
        wait = self.of_key.get(key)
        if wait is None or key in self.held:
            return key in self.held
        run_id, name, timeout = wait
        if self._box(run_id, name) is not None:
            return False
        self.held.add(key)
        if timeout is not None:
            self.timers[key] = asyncio.get_running_loop().call_later(timeout, self._expire, key)
        return True

    def deliver(self, run_id: str, name: str, value: Any) -> None:
        """The value of ``(run_id, name)``: kept in the task metadata, its held keys admitted."""
        self.scheduler.set_metadata([METADATA, run_id, name], {"value": value, "received": time.time()})
        self.values[(run_id, name)] = time.time()
        self.values.move_to_end((run_id, name))
        while len(self.values) > KEEP:
            (old_run, old_name), _ = self.values.popitem(last=False)
            self._drop_box(old_run, old_name)
        for key in self.waiting_keys(run_id, name):
            self._let_go(key)

    def waiting_keys(self, run_id: str, name: str) -> list[Any]:
        """The keys of ``(run_id, name)`` held now."""
        return [k for k in self.keys.get((run_id, name), ()) if k in self.held]

    def forget(self, key: Any) -> None:
        """``key`` was forgotten (finished and released, or cancelled): drop its wait."""
        wait = self.of_key.pop(key, None)
        if wait is None:
            return
        self.held.discard(key)
        timer = self.timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        keys = self.keys.get(wait[:2])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.keys[wait[:2]]

    def _expire(self, key: Any) -> None:
        self.timers.pop(key, None)
        wait = self.of_key.get(key)
        if wait is None or key not in self.held:
            return
        run_id, name, timeout = wait
        if self._box(run_id, name) is None:
            self.scheduler.set_metadata([METADATA, run_id, name], {"timeout": timeout})
        self._let_go(key)

    def _let_go(self, key: Any) -> None:
        self.held.discard(key)
        timer = self.timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self.admit(key)

    def _box(self, run_id: str, name: str) -> Any:
        box = self.scheduler.get_metadata([METADATA, run_id, name], default=None)
        return box if box is not None and "value" in box else None

    def _drop_box(self, run_id: str, name: str) -> None:
        runs = self.scheduler.task_metadata.get(METADATA, {})
        names = runs.get(run_id)
        if names is not None:
            names.pop(name, None)
            if not names:
                runs.pop(run_id, None)
                self.names.pop(run_id, None)
