"""``cleo-dask runs list``, ``cleo-dask runs show RUN_ID`` and ``cleo-dask runs forget``: read a run journal.

Exit codes: 0 ok, 2 bad input (unknown run id, missing / damaged / incompatible / empty journal,
a running run to forget).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from cleo_dask.cli.common import connection_args, fail, store_args
from cleo_dask.cli.types import count_type, days_type
from cleo_dask.durable.durability import RunStore
from cleo_dask.durable.journal import RUN_STATUSES
from cleo_dask.errors import StoreError


def register(sub: Any) -> None:
    """Add ``runs`` (``list``, ``show``, ``forget``) to the ``cleo-dask`` parser."""
    runs = sub.add_parser("runs", help="run history from a journal (Engine(store=...))",
                          description="Read the run journal: list runs, show one run's nodes.")
    rsub = runs.add_subparsers(dest="runs_command", metavar="COMMAND")
    ls = rsub.add_parser("list", help="list runs, newest first")
    store_args(ls)
    ls.add_argument("--agent", help="only runs of this agent id")
    ls.add_argument("--status", choices=RUN_STATUSES, help="only runs with this status (interrupted: resume those)")
    ls.add_argument("--workflow", help="only runs of this workflow name")
    ls.add_argument("--limit", type=count_type(0), default=50, help="at most this many runs (default 50)")
    ls.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    ls.set_defaults(func=cmd_list)
    show = rsub.add_parser("show", help="one run: its nodes, statuses, attempts and stored results",
                           description="One run from the journal (--store), or from the scheduler that carries "
                                       "it (--address / --scheduler-file: a run sent with `run --no-wait`).")
    show.add_argument("run_id")
    show.add_argument("--store", metavar="JOURNAL", help="the journal file (e.g. runs.db)")
    show.add_argument("--results", metavar="URL", help="the result store (default: JOURNAL.results)")
    connection_args(show)
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(func=cmd_show)
    forget = rsub.add_parser("forget", help="delete runs from the journal and their stored results",
                             description="Delete runs (given by id, or every finished run older than "
                                         "--older-than days) and their result files; cache entries stay.")
    forget.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    store_args(forget)
    forget.add_argument("--older-than", type=days_type(), metavar="DAYS",
                        help="every finished run started more than DAYS days ago (DAYS >= 0)")
    forget.set_defaults(func=cmd_forget)
    runs.set_defaults(func=lambda args: (runs.print_help(), 0)[1])


def _when(t: float | None) -> str:
    return "" if t is None else dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def cmd_list(args: argparse.Namespace) -> int:
    """``cleo-dask runs list``."""
    from cleo_dask.durable.journal import Journal
    try:
        records = Journal(args.store, create=False).runs(agent=args.agent, status=args.status,
                                                         workflow=args.workflow, limit=args.limit)
    except StoreError as exc:
        return fail(str(exc))
    if args.json:
        for r in records:
            print(json.dumps(r.to_dict()))
        return 0
    rows = [[r.id, r.agent, r.name, r.status, _when(r.started), _when(r.ended), r.nodes,
             " ".join(f"{k}={v}" for k, v in sorted(r.counts.items())), r.resumes or ""] for r in records]
    print(_table(["run", "agent", "workflow", "status", "started", "ended", "nodes", "counts", "resumes"], rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """``cleo-dask runs show RUN_ID``."""
    from cleo_dask.durable.journal import Journal
    if not args.store:
        from cleo_dask.cli.hostedshow import show_hosted
        return show_hosted(args)
    try:
        journal = Journal(args.store, create=False)
        record = journal.run(args.run_id)
        nodes = journal.nodes(args.run_id)
        attempts = journal.attempts(args.run_id)
    except StoreError as exc:
        return fail(str(exc))
    if args.json:
        print(json.dumps({"run": record.to_dict(), "nodes": [n.to_dict() for n in nodes.values()],
                          "attempts": [list(a) for a in attempts]}))
        return 0
    print(f"run {record.id}: workflow {record.name!r}, agent {record.agent!r}, status {record.status}, "
          f"started {_when(record.started)}, ended {_when(record.ended) or '-'}, resumes {record.resumes}")
    if record.note:
        print(f"note: {record.note}")
    errors = {}
    for node, _number, _s, _e, _w, error, _t in attempts:
        if error:
            errors[node] = error
    rows = [[n.node, n.status, n.attempts, "" if n.started is None or n.ended is None else f"{n.ended - n.started:.3f}",
             "yes" if n.resumable and n.result else "no", n.result or "", (n.note or errors.get(n.node) or "")[:80]]
            for n in nodes.values()]
    print(_table(["node", "status", "attempts", "seconds", "kept", "result", "note / error"], rows))
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    """``cleo-dask runs forget``."""
    import time

    from cleo_dask.durable.journal import Journal
    from cleo_dask.durable.resultstore import ResultStore
    if not args.run_ids and args.older_than is None:
        return fail("give run ids or --older-than DAYS")
    try:
        journal = Journal(args.store, create=False)
        records = [journal.run(r) for r in args.run_ids]
        if args.older_than is not None:
            cutoff = time.time() - args.older_than * 86400
            records += [r for r in journal.runs() if r.started is not None and r.started < cutoff
                        and r.status not in ("running", "interrupted")]
        for r in {r.id: r for r in records}.values():
            if r.status == "running":
                return fail(f"run {r.id} is running; it cannot be forgotten")
            ResultStore(r.results or RunStore(args.store, args.results).results_url).remove_run(r.id)
            journal.forget(r.id)
            print(f"forgot run {r.id}")
    except StoreError as exc:
        return fail(str(exc))
    return 0

