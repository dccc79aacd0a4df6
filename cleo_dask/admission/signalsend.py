"""Delivering signals to the scheduler (the client side of :mod:`cleo_dask.admission.signals`)."""
from __future__ import annotations

from typing import Any

from cleo_dask.admission.plugin import PLUGIN_NAME, ensure_installed
from cleo_dask.admission.signals import SignalWaits


def deliver(client: Any, run_id: str, name: str, value: Any) -> dict[str, Any]:
    """Hand ``value`` for signal ``name`` of run ``run_id`` to the scheduler (a node not released
    yet takes the latest value).  Returns what the scheduler knows of the run's signal waits:
    ``{"names": [...], "waiting": n}`` (its signal names seen so far, the nodes released now)."""
    ensure_installed(client)
    return client.run_on_scheduler(_deliver, run_id, name, value)


def known_signals(client: Any, run_id: str) -> list[str]:
    """The signal names of run ``run_id`` the scheduler holds (or held) waits for."""
    ensure_installed(client)
    return client.run_on_scheduler(_known, run_id)


def _waits(dask_scheduler: Any) -> SignalWaits:
    return dask_scheduler.plugins[PLUGIN_NAME].signals


def _deliver(run_id: str, name: str, value: Any, dask_scheduler: Any = None) -> dict[str, Any]:
    waits = _waits(dask_scheduler)
    waiting = len(waits.waiting_keys(run_id, name))
    waits.deliver(run_id, name, value)
    return {"names": sorted(waits.names.get(run_id, ())), "waiting": waiting}


def _known(run_id: str, dask_scheduler: Any = None) -> list[str]:
    return sorted(_waits(dask_scheduler).names.get(run_id, ()))
