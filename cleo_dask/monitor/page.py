"""The cleo dashboard page of one browser session: Bokeh widgets fed by the monitor plugin.

:func:`cleo_doc` builds the document (Bokeh calls it per connection): the runs table, a run
selector, the chosen run's DAG with nodes coloured by state, and a timeline of attempts per
worker.  A periodic callback redraws only what changed since the plugin's last ``version``; the
data shown comes from :mod:`cleo_dask.monitor.page_data`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from cleo_dask import config as _config
from cleo_dask.monitor import page_data as data
from cleo_dask.monitor.state import CleoMonitor, RunState

NO_RUNS = "<i>No cleo runs yet: submit one with engine.submit(...)</i>"


@dataclass
class View:
    """What this session shows now (so each refresh sends only what changed)."""

    version: int = -1                  # the plugin version drawn last (-1: redraw)
    pinned: bool = False               # an older run chosen by the user (else: follow the newest)
    updating: bool = False             # our own update is moving the selector
    shown: str | None = None           # the run whose DAG is laid out
    columns: dict[str, list] = field(default_factory=dict)   # its node columns as sent
    bars_seen: int = 0                 # its bars streamed so far (``RunState.bars_total``)
    workers: list[str] = field(default_factory=list)          # the timeline's rows


class Widgets:
    """The page's Bokeh models: runs table, selector, status line, legend, DAG and timeline."""

    def __init__(self) -> None:
        from bokeh.models import ColumnDataSource, Div, Select

        def source(fields: tuple[str, ...], **kwargs: Any) -> Any:
            return ColumnDataSource({k: [] for k in fields}, **kwargs)

        # an HTML table in a Div (re-rendered reliably on every change, readable in the DOM)
        self.runs = Div(text="", name="cleo-runs-table", sizing_mode="stretch_width")
        self.select = Select(title="Run", options=[], value="", width=420)
        self.status = Div(text="", name="cleo-run-status")
        self.legend = Div(text=data.legend_html(), styles={"font-size": "12px"})
        self.nodes = source(data.NODE_FIELDS, name="cleo-nodes")
        self.edges = source(data.EDGE_FIELDS)
        self.bars = source(data.BAR_FIELDS)
        self.live = source(data.BAR_FIELDS)
        self.dag = _dag_figure(self.nodes, self.edges)
        self.timeline = _timeline_figure(self.bars, self.live)

    def clear(self) -> None:
        """Empty the DAG and the timeline."""
        for src in (self.nodes, self.edges, self.bars, self.live):
            src.data = {k: [] for k in src.data}


def _dag_figure(nodes: Any, edges: Any) -> Any:
    from bokeh.models import HoverTool, LabelSet
    from bokeh.plotting import figure
    dag = figure(height=320, sizing_mode="stretch_width", title="Workflow (nodes coloured by state)",
                 toolbar_location="right", tools="pan,wheel_zoom,reset,save", x_axis_location=None,
                 y_axis_location=None, match_aspect=False)
    dag.grid.visible = False
    dag.y_range.flipped = True
    dag.multi_line("xs", "ys", source=edges, line_color="#777", line_width=1.5)
    rects = dag.rect("x", "y", width=0.7, height=0.5, source=nodes, fill_color="color", line_color="#333")
    dag.add_layout(LabelSet(x="x", y="y", text="label", source=nodes, text_align="center",
                            text_baseline="middle", text_font_size="11px"))
    dag.add_tools(HoverTool(renderers=[rects], tooltips=[("node", "@name"), ("state", "@state"),
                                                         ("attempts", "@attempts"), ("worker", "@worker"),
                                                         ("error / reason", "@error")]))
    return dag


def _timeline_figure(bars: Any, live: Any) -> Any:
    from bokeh.models import FactorRange, HoverTool
    from bokeh.plotting import figure
    timeline = figure(height=220, sizing_mode="stretch_width", title="Attempts per worker (seconds since run start)",
                      y_range=FactorRange(factors=[]), tools="pan,wheel_zoom,reset,save", toolbar_location="right")
    renderers = []
    for src in (bars, live):
        renderers.append(timeline.hbar(y="worker", left="left", right="right", height=0.7, source=src,
                                       fill_color="color", line_color="#333"))
        timeline.text(x="mid", y="worker", text="node", source=src, text_align="center", text_baseline="middle",
                      text_font_size="10px")
    timeline.add_tools(HoverTool(renderers=renderers, tooltips=[("node", "@node"), ("status", "@status"),
                                                             ("from", "@left{0.00} s"), ("to", "@right{0.00} s"),
                                                             ("", "@info")]))
    return timeline


class CleoPage:
    """One session's page: redraws from the monitor in ``holder[0]`` (a re-registered monitor
    takes the page over) what changed since the last refresh."""

    def __init__(self, holder: list[CleoMonitor]):
        self.holder = holder
        self.w = Widgets()
        self.view = View()
        self.w.select.on_change("value", self.on_select)

    def on_select(self, attr: str, old: Any, new: Any) -> None:
        """The user chose a run: the newest is followed, an older one stays chosen."""
        if self.view.updating:
            return   # our own update moved the selection
        options = self.w.select.options
        first = options[0][0] if options else None
        self.view.pinned = bool(new) and new != first
        self.view.version = -1
        self.update()

    def update(self) -> None:
        """Redraw what changed (the periodic callback)."""
        self.view.updating = True
        try:
            self._refresh(time.time())
        finally:
            self.view.updating = False

    def _refresh(self, now: float) -> None:
        plugin = self.holder[0]
        if plugin.version == self.view.version:
            chosen = plugin.runs.get(self.w.select.value)
            if chosen is not None and chosen.state == "running":
                self._show_live(chosen, now)
            return
        self.view.version = plugin.version
        run = plugin.runs.get(self._show_runs(plugin.summaries(), now))
        if run is None:
            self.w.status.text = NO_RUNS
            self.view.shown = None
            self.w.clear()
            return
        _set_text(self.w.status, data.status_html(run))
        self._show_nodes(run)
        self._stream_bars(run, plugin.max_bars, now)
        self._show_live(run, now)

    def _show_runs(self, runs: list[Any], now: float) -> str:
        """Refresh the runs table and the selector; the id of the run to show."""
        _set_text(self.w.runs, data.runs_table(runs, now))
        labels = data.run_options(runs)
        select = self.w.select
        if select.options != labels:
            select.options = labels
        ids = [r.id for r in runs]
        chosen = select.value if (self.view.pinned and select.value in ids) else (ids[0] if ids else "")
        if select.value != chosen:
            select.value = chosen
        return chosen

    def _show_nodes(self, run: RunState) -> None:
        drawn = data.drawn_nodes(run)
        if self.view.shown != run.id:
            # another run: lay its DAG out once (it does not change), send everything
            self.w.nodes.data, self.w.edges.data = data.dag_columns(run, drawn)
            self.view.shown = run.id
            self.view.columns = data.state_columns(run.nodes[n] for n in drawn)
            self.view.bars_seen = 0
            self.view.workers = []
            self.w.bars.data = {k: [] for k in self.w.bars.data}
            return
        # the same run: patch only the nodes that changed
        columns = data.state_columns(run.nodes[n] for n in drawn)
        patch = data.changed_rows(self.view.columns, columns)
        if patch:
            self.w.nodes.patch(patch)
            self.view.columns = columns

    def _stream_bars(self, run: RunState, max_bars: int, now: float) -> None:
        # bars are only ever appended (the oldest dropped past max-bars): stream the new ones
        fresh, restart = data.new_bars(run, self.view.bars_seen)
        if not fresh:
            return
        if restart:
            self.w.bars.data = {k: [] for k in self.w.bars.data}
        self.w.bars.stream(data.bar_columns(fresh, run.started, now), rollover=max_bars)
        self.view.bars_seen = run.bars_total

    def _show_live(self, run: RunState, now: float) -> None:
        live = data.live_bars(run, now)
        if live or self.w.live.data["worker"]:
            self.w.live.data = data.bar_columns(live, run.started, now)
        workers = sorted(set(self.view.workers) | set(self.w.bars.data["worker"]) | set(self.w.live.data["worker"]))
        if workers != self.view.workers:
            self.view.workers = workers
            self.w.timeline.y_range.factors = workers

    def layout(self, prefix: str) -> Any:
        """The whole page, under a header linking back to Dask's status page."""
        from bokeh.layouts import column, row
        from bokeh.models import Div
        header = Div(text=f"<h2 style='margin:4px 0'>cleo runs</h2><a href='{prefix}status'>Dask status</a>",
                     sizing_mode="stretch_width")
        w = self.w
        return column(header, w.runs, row(w.select, w.status), w.legend, w.dag, w.timeline,
                      sizing_mode="stretch_width")


def _set_text(div: Any, text: str) -> None:
    if div.text != text:
        div.text = text


def cleo_doc(holder: list[CleoMonitor], prefix: str, doc: Any) -> None:
    """Build the page for one browser session (Bokeh calls this per connection)."""
    page = CleoPage(holder)
    page.update()
    doc.add_periodic_callback(page.update, int(_config.get("monitor.refresh", 500)))
    doc.title = "Dask: cleo runs"
    doc.add_root(page.layout(prefix))
