"""Progress in a Jupyter notebook: an HTML bar updated in place (no ipywidgets needed).

Outside a notebook :func:`display_progress` hands over to the terminal version in
:mod:`cleo_dask.monitor.progress` (a tqdm bar on a terminal, plain lines otherwise).
"""
from __future__ import annotations

import html
import time
from typing import Any


def in_notebook() -> bool:
    """True inside a Jupyter kernel (an IPython ``ZMQInteractiveShell``)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress_html(run: Any, counts: dict[str, int], done: bool = False) -> str:
    """The bar as HTML: green for finished nodes, red for errored ones, and the counts."""
    total = max(1, counts.get("total", 0))
    ok = 100.0 * counts.get("done", 0) / total
    bad = 100.0 * counts.get("error", 0) / total
    label = (f"{html.escape(run.name)} <code>{html.escape(run.id)}</code>: {counts.get('done', 0)}/{counts.get('total', 0)} "
             f"done, {counts.get('error', 0)} errored, {counts.get('pending', 0)} pending"
             + (f" — <b>{html.escape(run.status())}</b>" if done else ""))
    return ("<div class='cleo-progress' style='font-family:sans-serif;font-size:12px'>"
            f"<div>{label}</div><div style='width:420px;height:14px;background:#eee;border:1px solid #999;display:flex'>"
            f"<div style='width:{ok:.1f}%;background:#5cb85c'></div><div style='width:{bad:.1f}%;background:#d9534f'></div>"
            "</div></div>")


def notebook_progress(run: Any, *, interval: float = 0.25, timeout: float | None = None) -> bool:
    """Display an HTML progress bar for ``run`` and update it in place until the run is done (True)
    or ``timeout`` seconds pass (False)."""
    from IPython.display import HTML, display
    handle = display(HTML(progress_html(run, run.progress())), display_id=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    last = None
    while True:
        wait = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
        finished = run.wait(wait)
        counts = run.progress()
        if finished or counts != last:
            last = counts
            handle.update(HTML(progress_html(run, counts, done=finished)))
        if finished:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


def display_progress(run: Any, *, notebook: bool | None = None, **kwargs: Any) -> bool:
    """Show ``run``'s progress until done (what :meth:`Run.show_progress` does): the notebook bar
    in Jupyter, else the terminal one."""
    if notebook if notebook is not None else in_notebook():
        return notebook_progress(run, **{k: v for k, v in kwargs.items() if k in ("interval", "timeout")})
    from cleo_dask.monitor.progress import terminal_progress
    return terminal_progress(run, **kwargs)
