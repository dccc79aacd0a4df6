"""The cleo page of the Dask dashboard (``/cleo``), served by the scheduler's own dashboard server.

Distributed builds its dashboard as Bokeh applications added to the scheduler's
``http_application`` (a ``RoutingApplication``; see ``distributed.dashboard.scheduler.connect``).
The monitor plugin adds one more Bokeh application the same way when it starts, so the page is
served next to ``/status`` on any scheduler that has cleo_dask installed, local or remote.

The page reads the plugin's state directly (same process, same event loop): the runs table, a run
selector, the chosen run's DAG with nodes coloured by state, and a timeline of attempts per
worker, refreshed by a periodic callback.
"""
from __future__ import annotations

import functools
import html
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cleo_dask import config as _config
from cleo_dask.core.picture import COLORS, layout

if TYPE_CHECKING:
    from cleo_dask.monitor.state import CleoMonitor


MAX_DRAWN = 1000      # nodes drawn in the DAG view (the first, in workflow order)
MAX_LABELLED = 150    # above this many nodes the boxes carry no text (hover shows it)


def page_path() -> str:
    """The page's path under the dashboard's prefix (``cleo_dask.monitor.dashboard-path``)."""
    return "/" + str(_config.get("monitor.dashboard-path", "cleo")).strip("/")


def add_page(scheduler: Any, plugin: CleoMonitor) -> bool:
    """Serve the cleo page from ``scheduler``'s dashboard server (once per scheduler)."""
    if getattr(scheduler, "_cleo_page", None) is not None:
        scheduler._cleo_page[0] = plugin   # a re-registered plugin takes over the page
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
    scheduler._cleo_page = holder
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


def _fmt_time(t: float | None) -> str:
    return "" if not t else datetime.fromtimestamp(t).strftime("%H:%M:%S")


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def _runs_table(runs: list[dict[str, Any]], now: float, limit: int = 15) -> str:
    head = "".join(f"<th style='text-align:left;padding:2px 10px'>{h}</th>"
                   for h in ("run", "workflow", "agent", "started", "state", "seconds", "nodes by state"))
    rows = []
    for r in runs[:limit]:
        cells = (r["id"], r["name"], r["agent"], _fmt_time(r["started"]), r["state"],
                 f"{(r['ended'] or now) - r['started']:.1f}", _counts_text(r["counts"]))
        rows.append(f"<tr class='cleo-run' data-run='{html.escape(r['id'])}' data-state='{html.escape(r['state'])}'>"
                    + "".join(f"<td style='padding:2px 10px'>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    more = f"<p>… {len(runs) - limit} older runs</p>" if len(runs) > limit else ""
    return (f"<table style='border-collapse:collapse;font-size:13px'><tr style='border-bottom:1px solid #999'>{head}</tr>"
            + "".join(rows) + "</table>" + more)


def _bar_columns(bars: list[dict[str, Any]], t0: float, now: float) -> dict[str, list]:
    left = [(b["start"] or t0) - t0 for b in bars]
    right = [max((b["end"] or now) - t0, lo + 0.005) for b, lo in zip(bars, left)]
    return {"worker": [str(b["worker"]) for b in bars], "left": left, "right": right,
            "mid": [(lo + hi) / 2 for lo, hi in zip(left, right)], "node": [b["node"] for b in bars],
            "status": [b["status"] for b in bars], "color": [COLORS.get(b["status"], "#fff") for b in bars],
            "info": [(b.get("error") or "")[:200] for b in bars]}


def cleo_doc(holder: list, prefix: str, doc: Any) -> None:
    """Build the page for one browser session (Bokeh calls this per connection)."""
    from bokeh.layouts import column, row
    from bokeh.models import ColumnDataSource, Div, FactorRange, HoverTool, LabelSet, Select
    from bokeh.plotting import figure

    # an HTML table in a Div (re-rendered reliably on every change, readable in the DOM)
    runs_div = Div(text="", name="cleo-runs-table", sizing_mode="stretch_width")
    select = Select(title="Run", options=[], value="", width=420)
    status = Div(text="", name="cleo-run-status")
    node_src = ColumnDataSource({k: [] for k in ("x", "y", "name", "label", "state", "color", "attempts", "worker",
                                                   "error")},
                                name="cleo-nodes")
    edge_src = ColumnDataSource({"xs": [], "ys": []})
    dag = figure(height=320, sizing_mode="stretch_width", title="Workflow (nodes coloured by state)",
                 toolbar_location="right", tools="pan,wheel_zoom,reset,save", x_axis_location=None,
                 y_axis_location=None, match_aspect=False)
    dag.grid.visible = False
    dag.y_range.flipped = True
    dag.multi_line("xs", "ys", source=edge_src, line_color="#777", line_width=1.5)
    rects = dag.rect("x", "y", width=0.7, height=0.5, source=node_src, fill_color="color", line_color="#333")
    dag.add_layout(LabelSet(x="x", y="y", text="label", source=node_src, text_align="center",
                            text_baseline="middle", text_font_size="11px"))
    dag.add_tools(HoverTool(renderers=[rects], tooltips=[("node", "@name"), ("state", "@state"),
                                                         ("attempts", "@attempts"), ("worker", "@worker"),
                                                         ("error / reason", "@error")]))
    legend = Div(text=" ".join(
        f"<span style='display:inline-block;width:11px;height:11px;background:{COLORS[st]};border:1px solid #333;"
        f"margin:0 3px 0 10px;vertical-align:middle'></span>{st}"
        for st in ("pending", "running", "retrying", "succeeded", "fell_back", "failed", "upstream_failed", "skipped",
                   "cancelled")),
        styles={"font-size": "12px"})

    bar_src = ColumnDataSource({k: [] for k in ("worker", "left", "right", "mid", "node", "status", "color", "info")})
    timeline = figure(height=220, sizing_mode="stretch_width", title="Attempts per worker (seconds since run start)",
                      y_range=FactorRange(factors=[]), tools="pan,wheel_zoom,reset,save", toolbar_location="right")
    live_src = ColumnDataSource({k: [] for k in bar_src.data})
    renderers = []
    for src in (bar_src, live_src):
        renderers.append(timeline.hbar(y="worker", left="left", right="right", height=0.7, source=src,
                                       fill_color="color", line_color="#333"))
        timeline.text(x="mid", y="worker", text="node", source=src, text_align="center", text_baseline="middle",
                      text_font_size="10px")
    timeline.add_tools(HoverTool(renderers=renderers, tooltips=[("node", "@node"), ("status", "@status"),
                                                             ("from", "@left{0.00} s"), ("to", "@right{0.00} s"),
                                                             ("", "@info")]))

    state: dict[str, Any] = {"version": -1, "pinned": False, "updating": False, "shown": None}

    def on_select(attr: str, old: Any, new: Any) -> None:
        if state["updating"]:
            return   # our own update moved the selection
        first = select.options[0][0] if select.options else None
        state["pinned"] = bool(new) and new != first   # the newest run is followed, others stay
        state["version"] = -1
        update()

    select.on_change("value", on_select)

    def update() -> None:
        state["updating"] = True
        try:
            _update()
        finally:
            state["updating"] = False

    def _update() -> None:
        plugin = holder[0]
        now = time.time()
        chosen_run = plugin.runs.get(select.value)
        if plugin.version == state["version"]:
            if chosen_run is not None and chosen_run.state == "running":
                _live_bars(chosen_run, now)
            return
        state["version"] = plugin.version
        runs = plugin.snapshot()["runs"]
        text = _runs_table(runs, now)
        if runs_div.text != text:
            runs_div.text = text
        options = [r["id"] for r in runs]
        labels = [(r["id"], f"{r['id']} — {r['name']} ({r['agent']}) {r['state']}") for r in runs]
        if select.options != labels:
            select.options = labels
        chosen = select.value if (state["pinned"] and select.value in options) else (options[0] if options else "")
        if select.value != chosen:
            select.value = chosen
        run = plugin.runs.get(chosen)
        if run is None:
            status.text = "<i>No cleo runs yet: submit one with engine.submit(...)</i>"
            state["shown"] = None
            for src in (node_src, edge_src, bar_src, live_src):
                src.data = {k: [] for k in src.data}
            return
        e = html.escape
        names = list(run.nodes)
        text = (f"<b>run {e(run.id)}</b> ({e(run.name)}, agent <code>{e(run.agent)}</code>): "
                f"<span class='cleo-state'>{e(run.state)}</span> — {e(_counts_text(run.counts()))}"
                + (f" <i>(drawing the first {MAX_DRAWN} of {len(names)} nodes)</i>" if len(names) > MAX_DRAWN else ""))
        if status.text != text:
            status.text = text
        drawn = names[:MAX_DRAWN]
        nodes = [run.nodes[n] for n in drawn]
        columns = {"state": [s.state for s in nodes], "color": [COLORS.get(s.state, "#fff") for s in nodes],
                   "attempts": [s.attempts for s in nodes], "worker": [s.worker or "" for s in nodes],
                   "error": [(s.error or "")[:200] for s in nodes]}
        if state.get("shown") != run.id:
            # another run: lay its DAG out once (it does not change), send everything
            state["shown"] = run.id
            keep = set(drawn)
            edges = [ed for ed in run.edges if keep.issuperset(ed)]
            pos = layout(drawn, edges)
            node_src.data = {"x": [pos[n][0] for n in drawn], "y": [pos[n][1] for n in drawn], "name": drawn,
                             "label": [("" if len(drawn) > MAX_LABELLED else n if len(n) <= 18 else n[:17] + "…")
                                       for n in drawn], **columns}
            edge_src.data = {"xs": [[pos[p][0] + 0.35, pos[c][0] - 0.35] for p, c in edges],
                             "ys": [[pos[p][1], pos[c][1]] for p, c in edges]}
            state["columns"] = columns
            state["bars_seen"] = 0
            state["workers"] = []
            bar_src.data = {k: [] for k in bar_src.data}
        else:
            # the same run: patch only the nodes that changed
            old = state["columns"]
            changed = [i for i in range(len(nodes)) if any(old[k][i] != columns[k][i] for k in columns)]
            if changed:
                node_src.patch({k: [(i, columns[k][i]) for i in changed] for k in columns})
                state["columns"] = columns
        # bars are only ever appended (the oldest dropped past max-bars): stream the new ones
        new = run.bars_total - state["bars_seen"]
        if new > 0:
            fresh = run.bars[-new:] if new <= len(run.bars) else list(run.bars)
            if new > len(run.bars):
                bar_src.data = {k: [] for k in bar_src.data}
            bar_src.stream(_bar_columns(fresh, run.started, now), rollover=plugin.max_bars)
            state["bars_seen"] = run.bars_total
        _live_bars(run, now)

    def _live_bars(run: Any, now: float) -> None:
        live = [{"node": s.name, "worker": s.worker or "?", "start": s.since, "end": now, "status": "running"}
                for s in run.nodes.values() if s.state == "running" and s.since]
        if live or live_src.data["worker"]:
            live_src.data = _bar_columns(live, run.started, now)
        workers = sorted(set(state.get("workers", [])) | set(bar_src.data["worker"]) | set(live_src.data["worker"]))
        if workers != state.get("workers"):
            state["workers"] = workers
            timeline.y_range.factors = workers

    update()
    doc.add_periodic_callback(update, int(_config.get("monitor.refresh", 500)))
    doc.title = "Dask: cleo runs"
    header = Div(text=f"<h2 style='margin:4px 0'>cleo runs</h2><a href='{prefix}status'>Dask status</a>",
                 sizing_mode="stretch_width")
    doc.add_root(column(header, runs_div, row(select, status), legend, dag, timeline, sizing_mode="stretch_width"))
