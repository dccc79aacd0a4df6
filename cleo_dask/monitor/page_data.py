"""What the cleo dashboard page shows, as plain data: the runs table (HTML), the status line, the
columns of the DAG's nodes and edges and of the timeline's bars.  Pure functions of the monitor's
state (no Bokeh), so they are tested without a browser."""
from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from cleo_dask.core.picture import COLORS, layout
from cleo_dask.monitor.state import NodeState, RunState, RunSummary

MAX_DRAWN = 1000      # nodes drawn in the DAG view (the first, in workflow order)
MAX_LABELLED = 150    # above this many nodes the boxes carry no text (hover shows it)
RUNS_SHOWN = 15       # rows of the runs table
LEGEND = ("pending", "running", "retrying", "succeeded", "fell_back", "failed", "upstream_failed", "skipped",
          "cancelled")
NODE_FIELDS = ("x", "y", "name", "label", "state", "color", "attempts", "worker", "error")
EDGE_FIELDS = ("xs", "ys")
BAR_FIELDS = ("worker", "left", "right", "mid", "node", "status", "color", "info")


def fmt_time(t: float | None) -> str:
    """``HH:MM:SS`` of an epoch time (empty for none)."""
    return "" if not t else datetime.fromtimestamp(t).strftime("%H:%M:%S")


def counts_text(counts: dict[str, int]) -> str:
    """``"failed 1, succeeded 3"``: nodes by state, sorted by state."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def runs_table(runs: Sequence[RunSummary], now: float, limit: int = RUNS_SHOWN) -> str:
    """The runs table as HTML (newest first, ``limit`` rows and a line counting the older ones)."""
    head = "".join(f"<th style='text-align:left;padding:2px 10px'>{h}</th>"
                   for h in ("run", "workflow", "agent", "started", "state", "seconds", "nodes by state"))
    rows = "".join(_run_row(r, now) for r in runs[:limit])
    more = f"<p>… {len(runs) - limit} older runs</p>" if len(runs) > limit else ""
    return (f"<table style='border-collapse:collapse;font-size:13px'><tr style='border-bottom:1px solid #999'>{head}</tr>"
            + rows + "</table>" + more)


def _run_row(r: RunSummary, now: float) -> str:
    cells = (r.id, r.name, r.agent, fmt_time(r.started), r.state, f"{(r.ended or now) - r.started:.1f}",
             counts_text(r.counts))
    return (f"<tr class='cleo-run' data-run='{html.escape(r.id)}' data-state='{html.escape(r.state)}'>"
            + "".join(f"<td style='padding:2px 10px'>{html.escape(str(c))}</td>" for c in cells) + "</tr>")


def run_options(runs: Sequence[RunSummary]) -> list[tuple[str, str]]:
    """The run selector's ``(value, label)`` pairs."""
    return [(r.id, f"{r.id} — {r.name} ({r.agent}) {r.state}") for r in runs]


def status_html(run: RunState) -> str:
    """The line above the DAG: the chosen run, its state and counts."""
    e = html.escape
    n = len(run.nodes)
    return (f"<b>run {e(run.id)}</b> ({e(run.name)}, agent <code>{e(run.agent)}</code>): "
            f"<span class='cleo-state'>{e(run.state)}</span> — {e(counts_text(run.counts()))}"
            + (f" <i>(drawing the first {MAX_DRAWN} of {n} nodes)</i>" if n > MAX_DRAWN else ""))


def legend_html() -> str:
    """A colour swatch and name per node state."""
    return " ".join(
        f"<span style='display:inline-block;width:11px;height:11px;background:{COLORS[st]};border:1px solid #333;"
        f"margin:0 3px 0 10px;vertical-align:middle'></span>{st}" for st in LEGEND)


def drawn_nodes(run: RunState) -> list[str]:
    """The nodes the DAG view draws: the first :data:`MAX_DRAWN`, in workflow order."""
    return list(run.nodes)[:MAX_DRAWN]


def state_columns(nodes: Iterable[NodeState]) -> dict[str, list]:
    """The columns of the DAG's nodes that change while the run runs."""
    nodes = list(nodes)
    return {"state": [s.state for s in nodes], "color": [COLORS.get(s.state, "#fff") for s in nodes],
            "attempts": [s.attempts for s in nodes], "worker": [s.worker or "" for s in nodes],
            "error": [(s.error or "")[:200] for s in nodes]}


def changed_rows(old: dict[str, list], new: dict[str, list]) -> dict[str, list[tuple[int, Any]]]:
    """A Bokeh ``patch`` turning the columns ``old`` into ``new`` (empty when nothing changed)."""
    rows = [i for i in range(len(new["state"])) if any(old[k][i] != new[k][i] for k in new)]
    return {k: [(i, new[k][i]) for i in rows] for k in new} if rows else {}


def dag_columns(run: RunState, drawn: list[str]) -> tuple[dict[str, list], dict[str, list]]:
    """The node and edge columns of ``run``'s DAG, laid out once (its shape does not change)."""
    keep = set(drawn)
    edges = [ed for ed in run.edges if keep.issuperset(ed)]
    pos = layout(drawn, edges)
    nodes = {"x": [pos[n][0] for n in drawn], "y": [pos[n][1] for n in drawn], "name": drawn,
             "label": [_label(n, len(drawn)) for n in drawn],
             **state_columns(run.nodes[n] for n in drawn)}
    lines = {"xs": [[pos[p][0] + 0.35, pos[c][0] - 0.35] for p, c in edges],
             "ys": [[pos[p][1], pos[c][1]] for p, c in edges]}
    return nodes, lines


def _label(name: str, drawn: int) -> str:
    if drawn > MAX_LABELLED:
        return ""
    return name if len(name) <= 18 else name[:17] + "…"


def bar_columns(bars: list[dict[str, Any]], t0: float, now: float) -> dict[str, list]:
    """Timeline columns for attempt bars (seconds since the run's start ``t0``; open bars end ``now``)."""
    left = [(b["start"] or t0) - t0 for b in bars]
    right = [max((b["end"] or now) - t0, lo + 0.005) for b, lo in zip(bars, left)]
    return {"worker": [str(b["worker"]) for b in bars], "left": left, "right": right,
            "mid": [(lo + hi) / 2 for lo, hi in zip(left, right)], "node": [b["node"] for b in bars],
            "status": [b["status"] for b in bars], "color": [COLORS.get(b["status"], "#fff") for b in bars],
            "info": [(b.get("error") or "")[:200] for b in bars]}


def live_bars(run: RunState, now: float) -> list[dict[str, Any]]:
    """A bar per node running now (from when it started to ``now``)."""
    return [{"node": s.name, "worker": s.worker or "?", "start": s.since, "end": now, "status": "running"}
            for s in run.nodes.values() if s.state == "running" and s.since]


def new_bars(run: RunState, seen: int) -> tuple[list[dict[str, Any]], bool]:
    """The bars added since ``seen`` were streamed, and whether some were dropped unseen (then the
    timeline restarts from the bars kept)."""
    new = run.bars_total - seen
    if new <= 0:
        return [], False
    if new > len(run.bars):
        return list(run.bars), True
    return run.bars[-new:], False
