"""A picture of a workflow: an SVG drawn from plain data (node names, edges, optional states),
laid out by the DAG's topological generations (no graphviz).

``wf.visualize()`` shows node names and edges; ``run.visualize()`` colours each node by its state
(read by :mod:`cleo_dask.monitor.pictures`).  The same layout and colours feed the dashboard page.
"""
from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

import networkx as nx

# One colour per node state (shared with the dashboard page).
COLORS: dict[str, str] = {
    "pending": "#d9d9d9", "running": "#4c9be8", "retrying": "#f0ad4e", "succeeded": "#5cb85c",
    "fell_back": "#b38bd6", "failed": "#d9534f", "skipped": "#aaaaaa", "cancelled": "#777777",
    "upstream_failed": "#d8a0a0",   # a skip caused by a failure: grey turned red
    "none": "#eef3fb",
}

_W, _H, _DX, _DY, _PAD = 150, 34, 200, 56, 20


def layout(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> dict[str, tuple[float, float]]:
    """Position of each node: ``x`` = its topological generation, ``y`` = its rank within it."""
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    g.add_edges_from(edges)
    pos: dict[str, tuple[float, float]] = {}
    for x, generation in enumerate(nx.topological_generations(g)):
        for y, n in enumerate(sorted(generation, key=str)):
            pos[n] = (float(x), float(y))
    return pos


class WorkflowImage:
    """An SVG picture; renders inline in Jupyter (``_repr_svg_``).  ``data`` is the SVG text."""

    def __init__(self, data: str, nodes: tuple[str, ...]):
        self.data = data
        self.nodes = nodes

    def _repr_svg_(self) -> str:
        return self.data

    def save(self, path: str) -> None:
        """Write the SVG to ``path``."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.data)

    def __repr__(self) -> str:
        return f"<WorkflowImage {len(self.nodes)} nodes, {len(self.data)} bytes of SVG>"


def draw(nodes: Iterable[str], edges: Iterable[tuple[str, str]], states: Mapping[str, str] | None = None,
         title: str | None = None) -> WorkflowImage:
    """Draw a DAG left to right; nodes coloured by ``states`` (node -> state) when given."""
    nodes = tuple(nodes)
    edges = [tuple(e) for e in edges]
    pos = layout(nodes, edges)
    width = int(max((x for x, _ in pos.values()), default=0) * _DX + _W + 2 * _PAD)
    top = 28 if title else 0
    height = int(max((y for _, y in pos.values()), default=0) * _DY + _H + 2 * _PAD + top)
    legend = sorted({states.get(n, "pending") for n in nodes}) if states else []
    if legend:
        height += 26
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>']
    if title:
        out.append(f'<text x="{_PAD}" y="20" font-size="14" font-weight="bold">{html.escape(title)}</text>')

    def box(n: str) -> tuple[float, float]:
        x, y = pos[n]
        return _PAD + x * _DX, top + _PAD + y * _DY

    for p, c in edges:
        (x0, y0), (x1, y1) = box(p), box(c)
        out.append(f'<path class="edge" d="M {x0 + _W:.0f} {y0 + _H / 2:.0f} C {x0 + _W + 25:.0f} {y0 + _H / 2:.0f} '
                   f'{x1 - 25:.0f} {y1 + _H / 2:.0f} {x1:.0f} {y1 + _H / 2:.0f}" fill="none" stroke="#555" '
                   f'marker-end="url(#arrow)"><title>{html.escape(p)} → {html.escape(c)}</title></path>')
    for n in nodes:
        x, y = box(n)
        state = states.get(n, "pending") if states else "none"
        label = n if len(n) <= 22 else n[:21] + "…"
        out.append(f'<g class="node" data-node="{html.escape(n)}" data-state="{state}">'
                   f'<title>{html.escape(n)}{"" if not states else " — " + state}</title>'
                   f'<rect x="{x:.0f}" y="{y:.0f}" width="{_W}" height="{_H}" rx="6" fill="{COLORS.get(state, "#fff")}" '
                   f'stroke="#333"/><text x="{x + _W / 2:.0f}" y="{y + _H / 2 + 4:.0f}" text-anchor="middle">'
                   f'{html.escape(label)}</text></g>')
    if legend:
        lx, ly = _PAD, height - 18
        for st in legend:
            out.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{COLORS.get(st, "#fff")}" stroke="#333"/>'
                       f'<text x="{lx + 16}" y="{ly}">{st}</text>')
            lx += 30 + 7 * len(st)
    out.append("</svg>")
    return WorkflowImage("".join(out), nodes)


def workflow_edges(wf: Any) -> list[tuple[str, str]]:
    """``(parent, child)`` for each edge of a :class:`Workflow`."""
    return [(p, n) for n, node in wf.nodes.items() for p in node.parents]


def draw_workflow(wf: Any, states: Mapping[str, str] | None = None, title: str | None = None) -> WorkflowImage:
    """The picture of a :class:`Workflow`: node names and edges, coloured by ``states`` when given
    (titled with the workflow's name unless ``title`` is given)."""
    return draw(list(wf.nodes), workflow_edges(wf), states=states,
                title=title if title is not None else getattr(wf, "name", None))
