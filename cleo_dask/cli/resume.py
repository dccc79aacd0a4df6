"""``cleo-dask resume RUN_ID``: resume a journaled run; only its unfinished nodes run again.

Exit codes: 0 every node succeeded, fell back or was skipped by its condition, 1 some node
failed, 2 bad input (unknown run id, missing / damaged / incompatible / empty journal, damaged
result file, unreachable or lost scheduler, ``--timeout`` passed).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from cleo_dask.cli.common import (BadInput, connection_args, engine_from_args, fail, importable_cwd,
                                  make_durable, store_args)
from cleo_dask.cli.types import seconds_type
from cleo_dask.durable.durability import RunStore
from cleo_dask.errors import CleoError, ClusterLost, StoreError, WorkflowError


def register(sub: Any) -> None:
    """Add ``resume`` to the ``cleo-dask`` parser."""
    res = sub.add_parser("resume", help="resume a journaled run: only unfinished nodes run again",
                         description="Resume a run recorded in a journal.  Nodes that finished keep their "
                                     "stored results.  Exit 0 if every node succeeded, 1 if any failed, 2 on bad input.")
    res.add_argument("run_id")
    store_args(res)
    connection_args(res)
    res.add_argument("--timeout", type=seconds_type(), default=None, metavar="SECONDS",
                     help="give up waiting after this long")
    res.add_argument("--force", action="store_true",
                     help="resume even if the journal says another live process of this host runs it")
    res.set_defaults(func=cmd_resume, wait_workers=0)


def cmd_resume(args: argparse.Namespace) -> int:
    """``cleo-dask resume RUN_ID``."""
    from cleo_dask.durable.journal import Journal
    from cleo_dask.monitor.progress import failed, summary_table
    importable_cwd()
    try:  # check the journal and the run before starting or reaching a cluster
        journal = Journal(args.store, create=False)
        journal.run(args.run_id)
        journal.close()
        engine = engine_from_args(args)
    except (CleoError, BadInput) as exc:
        return fail(str(exc))
    try:
        make_durable(engine, RunStore(args.store, args.results))
        run = engine.resume(args.run_id, force=args.force)
        kept = getattr(run, "resumed_from", {})
        print(f"run {run.id} resumed: {kept.get('kept', 0)} node(s) kept, {kept.get('again', 0)} to run",
              file=sys.stderr, flush=True)
        outcome = run.result(timeout=args.timeout)
        print(summary_table(outcome), flush=True)
        engine.durable.wait_journaled(run.id)  # the journal has the end before this process exits
        return 1 if failed(outcome) else 0
    except (StoreError, WorkflowError, BadInput, ClusterLost) as exc:
        return fail(str(exc))
    except TimeoutError as exc:
        return fail(str(exc))
    finally:
        engine.close()
