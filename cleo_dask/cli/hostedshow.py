"""``cleo-dask runs show RUN_ID --address ...``: a run carried by the scheduler's run host (sent
with ``cleo-dask run --no-wait``), read while it runs and after.

Exit codes: 0 ok, 2 bad input (no --store nor scheduler given, an unreachable scheduler, a run
id the scheduler does not host).
"""
from __future__ import annotations

import argparse
import json

from cleo_dask.cli.common import BadInput, engine_from_args, fail
from cleo_dask.errors import CleoError


def show_hosted(args: argparse.Namespace) -> int:
    """Print the hosted run ``args.run_id``: its status and progress, and once done its nodes."""
    from cleo_dask.monitor.progress import outcome_json, summary_table
    if not (args.address or args.scheduler_file):
        return fail("runs show needs --store JOURNAL, or --address / --scheduler-file for a run the scheduler carries")
    try:
        engine = engine_from_args(args)
    except (BadInput, CleoError) as exc:
        return fail(str(exc))
    try:
        run = engine.attach(args.run_id)
        done = run.done()
        outcome = run.result(timeout=0) if done else None
    except CleoError as exc:
        return fail(str(exc))
    finally:
        engine.close()
    if args.json:
        data = outcome_json(run, outcome) if outcome is not None else {
            "run_id": run.id, "name": run.name, "agent": run.agent, "started": run.started,
            "progress": run.progress()}
        data["status"] = run.status()   # the run's own ("running", "cancelled", ...)
        print(json.dumps(data, default=repr))
        return 0
    p = run.progress() if outcome is None else None
    print(f"run {run.id}: workflow {run.name!r}, agent {run.agent!r}, status "
          f"{'running' if outcome is None else run.status()}"
          + (f", {p['done']} of {p['total']} nodes done, {p['error']} erred" if p else ""))
    if outcome is not None:
        print(summary_table(outcome))
    return 0
