"""How a run and its outcome show in a notebook (HTML), and how an agent is named there."""
from __future__ import annotations

import html
import itertools
from collections.abc import Mapping
from typing import Any

from cleo_dask.core.agent import agent_id
from cleo_dask.core.outcome import TaskResult

MAX_ROWS = 100   # an outcome's table shows this many nodes at most


def agent_label(agent: Any) -> str:
    """The agent's id as shown in a run's repr."""
    return agent_id(agent)


def run_html(run_id: str, name: str, agent: Any, status: str, progress: Mapping[str, int],
             dashboard_link: str | None) -> str:
    """A run's summary: id, name, agent, status, counts of nodes by state and the dashboard link."""
    p = progress
    link = dashboard_link
    return (f"<div><strong>cleo_dask Run</strong> <code>{html.escape(run_id)}</code> "
            f"({html.escape(name)}, agent <code>{html.escape(agent_label(agent))}</code>)<br>"
            f"status: <b>{status}</b>; nodes: {p['total']} — done {p['done']}, "
            f"errored {p['error']}, pending {p['pending']}"
            + (f"<br><a href='{html.escape(link)}' target='_blank'>Dask dashboard</a>" if link else "")
            + "</div>")


def outcome_html(results: Mapping[str, TaskResult]) -> str:
    """A table of the first :data:`MAX_ROWS` nodes: status, attempts, seconds, error or reason."""
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{r.status.value}</td><td>{len(r.attempts)}</td>"
        f"<td>{'' if r.duration is None else f'{r.duration:.3f}'}</td>"
        f"<td>{html.escape(repr(r.error)) if r.error is not None else html.escape(r.reason or '')}</td></tr>"
        for n, r in itertools.islice(results.items(), MAX_ROWS))
    return ("<table><tr><th>node</th><th>status</th><th>attempts</th><th>seconds</th><th>error / reason</th></tr>"
            f"{rows}</table>")
