"""``cleo-dask signal RUN_ID NAME --value JSON``: send a signal to a run's signal node.

With ``--address`` / ``--scheduler-file`` the signal goes to the run's cluster at once; with
``--store`` it is journaled too, and a run no client drives now (``--store`` alone) gets it
when it is resumed.  Exit codes: 0 sent (or recorded), 2 bad input (unknown run or signal name,
a run already finished, a value that is not JSON, an unreachable scheduler, no journal).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cleo_dask.cli.common import BadInput, connection_args, engine_from_args, fail
from cleo_dask.errors import CleoError


def register(sub: Any) -> None:
    """Add ``signal`` to the ``cleo-dask`` parser."""
    p = sub.add_parser("signal", help="send a signal to a run (its node wf.add_signal(NAME))",
                       description="Send signal NAME to run RUN_ID: its signal node is done with the value.  "
                                   "Exit 0 when sent (or recorded for a resume), 2 on bad input.")
    p.add_argument("run_id")
    p.add_argument("name")
    p.add_argument("--value", default="null", metavar="JSON", help="the signal's value, as JSON (default: null)")
    p.add_argument("--store", metavar="JOURNAL", help="the run's journal: record the signal (delivered on resume)")
    connection_args(p)
    p.set_defaults(func=cmd_signal, wait_workers=0)


def cmd_signal(args: argparse.Namespace) -> int:
    """``cleo-dask signal RUN_ID NAME``."""
    from cleo_dask.durable.journal import Journal
    from cleo_dask.durable.signals import send_signal
    try:
        value = json.loads(args.value)
    except ValueError as exc:
        return fail(f"--value is not JSON ({exc}): {args.value!r}")
    if not (args.address or args.scheduler_file or args.store):
        return fail("give --address (or --scheduler-file) to reach the run's cluster, or --store with its journal")
    journal = engine = None
    try:
        if args.store:
            journal = Journal(args.store, create=False)
        if args.address or args.scheduler_file:
            engine = engine_from_args(args)
        how = send_signal(args.run_id, args.name, value, client=engine.client if engine else None, journal=journal)
    except (CleoError, BadInput) as exc:
        return fail(str(exc))
    finally:
        if journal is not None:
            journal.close()
        if engine is not None:
            engine.close()
    print(f"signal {args.name!r} {how} to run {args.run_id}" + ("" if engine else " (delivered when it is resumed)"),
          file=sys.stderr, flush=True)
    return 0
