"""Showing a run's progress while it runs, and its outcome as a table or JSON when it is done.

:func:`terminal_progress` draws a tqdm bar on a terminal and prints plain lines otherwise (logs, CI);
it only reads :meth:`Run.progress` counts, so it never moves results off the cluster.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, TextIO

from cleo_dask.core.outcome import Status


def terminal_progress(run: Any, *, file: TextIO | None = None, interval: float = 0.25, tty: bool | None = None,
                  timeout: float | None = None, tqdm_class: Any = None) -> bool:
    """Show the progress of ``run`` until it is done (True) or ``timeout`` seconds pass (False).

    On a terminal (``file.isatty()``, or ``tty=True``) a tqdm bar counts finished nodes; otherwise
    a line ``progress: 3/8 done, 1 errored, 4 pending`` is printed each time the counts change.
    ``tqdm_class`` picks another bar (e.g. ``tqdm.notebook.tqdm`` in Jupyter).
    """
    file = sys.stderr if file is None else file
    if tty is None:
        tty = bool(getattr(file, "isatty", lambda: False)())
    deadline = None if timeout is None else time.monotonic() + timeout
    total = len(run.workflow)
    if tty or tqdm_class is not None:
        if tqdm_class is None:
            from tqdm import tqdm as tqdm_class
        bar = tqdm_class(total=total, desc=f"{run.name} {run.id[:8]}", unit="node", file=file, leave=True,
                         **_width(file))

        def show(counts: dict[str, int], final: bool = False) -> None:
            finished = counts["done"] + counts["error"]
            bar.update(finished - bar.n)
            bar.set_postfix_str(f"{counts['error']} errored" if counts["error"] else "", refresh=True)
            if final:
                bar.close()
    else:
        last: list[Any] = [None]

        def show(counts: dict[str, int], final: bool = False) -> None:
            key = (counts["done"], counts["error"], counts["pending"])
            if key != last[0] or final:
                last[0] = key
                print(f"progress: {counts['done']}/{total} done, {counts['error']} errored, "
                      f"{counts['pending']} pending", file=file, flush=True)

    while True:
        wait = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
        finished = run.wait(wait)
        counts = run.progress()
        if finished:
            outcome = run.result()
            counts = dict(counts, error=len(failed(outcome)), done=len(outcome) - len(failed(outcome)), pending=0)
            show(counts, final=True)
            if not tty and tqdm_class is None:
                print("finished: " + ", ".join(f"{n} {s}" for s, n in sorted(outcome.counts().items())),
                      file=file, flush=True)
            return True
        show(counts)
        if deadline is not None and time.monotonic() >= deadline:
            show(counts, final=True)
            return False


def _width(file: Any) -> dict[str, Any]:
    """Follow the terminal's width; 80x24 when it reports no size (a fresh pseudo-terminal)."""
    try:
        cols = os.get_terminal_size(file.fileno()).columns
    except (AttributeError, OSError, ValueError):
        cols = 0
    return {"dynamic_ncols": True} if cols else {"ncols": 80, "nrows": 24}  # tqdm draws nothing with 0 rows


def _duration(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    return f"{seconds:.2f}s" if seconds < 60 else f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def summary_table(outcome: Any) -> str:
    """A plain-text table of a run's outcome: node, status, attempts, duration, and why it did not succeed."""
    rows = [("node", "status", "attempts", "duration", "detail")]
    for name, r in outcome.items():
        detail = ""
        if r.error is not None:
            detail = f"{type(r.error).__name__}: {r.error}"
        elif r.reason:
            detail = r.reason
        if len(detail) > 80:
            detail = detail[:77] + "..."
        rows.append((name, r.status.value, str(len(r.attempts)), _duration(r.duration), detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        cells = [row[j].ljust(widths[j]) if j != 2 else row[j].rjust(widths[j]) for j in range(4)]
        lines.append("  ".join(cells + [row[4]]).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    counts = outcome.counts()
    lines.append("")
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "\n".join(lines)


def failed(outcome: Any) -> list[str]:
    """Nodes that failed or were cancelled (what makes ``cleo-dask run`` exit 1)."""
    return [n for n, r in outcome.items() if r.status in (Status.FAILED, Status.CANCELLED)]


def outcome_json(run: Any, outcome: Any) -> dict[str, Any]:
    """A JSON-ready summary of a finished run; values included when they are JSON, else their repr."""
    nodes = {}
    for name, r in outcome.items():
        d = r.to_dict()
        d["attempts"] = len(r.attempts)
        try:
            value = r.value
            json.dumps(value, allow_nan=False)  # NaN / Infinity are not JSON: their repr instead
            d["value"] = value
        except Exception:  # noqa: BLE001 - a value that is not JSON (or cannot be fetched)
            try:
                d["value_repr"] = repr(r.value)[:1000]
            except Exception:  # noqa: BLE001
                d["value_repr"] = None
        nodes[name] = d
    bad = failed(outcome)
    return {
        "run_id": run.id, "name": run.name, "agent": getattr(run.agent, "id", str(run.agent)),
        "status": "failed" if bad else "succeeded", "counts": outcome.counts(), "failed": bad,
        "started": getattr(run, "started", None), "ended": getattr(run, "ended", None), "nodes": nodes,
    }
