"""Installing monitoring on a cluster: the monitor plugin on the scheduler, then its dashboard page.

The plugin (:mod:`cleo_dask.monitor.state`) keeps state and knows nothing of the page; the page
(:mod:`cleo_dask.monitor.dashboard`) reads the plugin.  This module wires the two, so the
dependencies point one way: installer -> page -> plugin.
"""
from __future__ import annotations

import logging
from typing import Any

from cleo_dask.monitor.state import PLUGIN_NAME, CleoMonitor

logger = logging.getLogger("cleo_dask")


def install(client: Any) -> bool:
    """Register the monitor on ``client``'s scheduler (idempotent) and serve its page there; False
    if the plugin could not be registered (typically: cleo_dask is not installed where the
    scheduler runs)."""
    try:
        client.register_plugin(CleoMonitor(), name=PLUGIN_NAME)
    except Exception:  # noqa: BLE001
        logger.warning("cleo_dask monitor not registered on the scheduler (is cleo_dask installed there?)",
                       exc_info=True)
        return False
    try:
        client.run_on_scheduler(add_page_on_scheduler)
    except Exception:  # noqa: BLE001 - no bokeh / no dashboard: monitoring still works
        logger.info("cleo dashboard page not added", exc_info=True)
    return True


def add_page_on_scheduler(dask_scheduler: Any = None) -> bool:
    """On the scheduler: serve the page of the registered monitor, unless it was built without one
    (``cleo_dask.monitor.dashboard: false``); a re-registered monitor takes the page over."""
    plugin = dask_scheduler.plugins.get(PLUGIN_NAME)
    if plugin is None or not plugin.dashboard:
        return False
    from cleo_dask.monitor.dashboard import add_page
    return add_page(dask_scheduler, plugin)
