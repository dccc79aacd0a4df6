"""The cleo page of the Dask dashboard (``/cleo``), served by the scheduler's own dashboard server.

Distributed builds its dashboard as Bokeh applications added to the scheduler's
``http_application`` (a ``RoutingApplication``; see ``distributed.dashboard.scheduler.connect``).
The installer (:mod:`cleo_dask.monitor.install`) adds one more Bokeh application the same way
once the monitor plugin is registered, so the page is served next to ``/status`` on any scheduler
that has cleo_dask installed, local or remote.

The page (:mod:`cleo_dask.monitor.page`) reads the plugin's state directly (same process, same
event loop); the plugin never imports it.
"""
from __future__ import annotations

import functools
import weakref
from typing import Any

from cleo_dask import config as _config
from cleo_dask.monitor.page import cleo_doc
from cleo_dask.monitor.state import CleoMonitor

# scheduler -> [the monitor its page reads] (one page per scheduler; a new monitor takes it over)
_pages: weakref.WeakKeyDictionary[Any, list[CleoMonitor]] = weakref.WeakKeyDictionary()


def page_path() -> str:
    """The page's path under the dashboard's prefix (``cleo_dask.monitor.dashboard-path``)."""
    return "/" + str(_config.get("monitor.dashboard-path", "cleo")).strip("/")


def add_page(scheduler: Any, plugin: CleoMonitor) -> bool:
    """Serve the cleo page from ``scheduler``'s dashboard server (once per scheduler)."""
    holder = _pages.get(scheduler)
    if holder is not None:
        holder[0] = plugin   # a re-registered plugin takes over the page
        return True
    app_root = getattr(scheduler, "http_application", None)
    http_server = getattr(scheduler, "http_server", None)
    if app_root is None or http_server is None:
        return False
    import dask
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler
    from bokeh.server.util import create_hosts_allowlist
    from distributed.dashboard.core import DaskBokehTornado
    from tornado.ioloop import IOLoop

    holder = [plugin]
    _pages[scheduler] = holder
    prefix = dask.config.get("distributed.scheduler.http.prefix", None) or ""
    prefix = "/" + prefix.strip("/") + "/" if prefix else "/"
    kwargs = dict(dask.config.get("distributed.scheduler.dashboard.bokeh-application"))
    origins = create_hosts_allowlist(kwargs.pop("allow_websocket_origin"), http_server.port)
    app = DaskBokehTornado({page_path(): Application(FunctionHandler(functools.partial(cleo_doc, holder, prefix)))},
                           prefix=prefix, use_index=False, extra_websocket_origins=origins, absolute_url="",
                           **kwargs)
    app_root.add_application(app)
    app.initialize(IOLoop.current())
    app.start()
    return True
