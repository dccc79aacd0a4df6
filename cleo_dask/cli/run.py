"""``cleo-dask run``: run a workflow spec from a shell, wait for it and print a summary table.

Exit codes: 0 every node succeeded (or was skipped by its condition, or fell back), 1 some node
failed, 2 bad input (spec, arguments, a missing or unknown workflow parameter, TLS files,
unreachable scheduler), 130 interrupted.
Defaults come from Dask's config, section ``cleo_dask.cli`` (``DASK_CLEO_DASK__CLI__ADDRESS=...``).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any

from cleo_dask import config as _config
from cleo_dask.cli.common import (INTERRUPTED, BadInput, connection_args, engine_from_args, fail,
                                  importable_cwd, input_args, inputs_from_args, make_durable)
from cleo_dask.cli.types import count_type
from cleo_dask.errors import ClusterLost, CodeError, StoreError, WorkflowError


def register(sub: Any) -> None:
    """Add ``run`` to the ``cleo-dask`` parser."""
    p = sub.add_parser("run", help="run a workflow spec (YAML/JSON) or package.module:workflow",
                       description="Run a workflow and wait for it, showing progress, then a summary table. "
                                   "Exit 0 if every node succeeded, 1 if any failed, 2 on bad input.")
    p.add_argument("spec", help="a spec file (.yaml/.yml/.json) or an import path package.module:name")
    connection_args(p)
    p.add_argument("--agent-file", help="YAML/JSON file with the agent (id, config, max_concurrency)")
    input_args(p)
    p.add_argument("--json", dest="json_out", metavar="FILE", help="write the results as JSON to FILE ('-': stdout)")
    p.add_argument("--no-wait", action="store_true",
                   help="submit, print the run id and exit (needs a running cluster: --address/--scheduler-file)")
    p.add_argument("--wait-workers", type=count_type(0), default=0, metavar="N",
                   help="wait (up to --connect-timeout) until N workers are connected before submitting")
    p.add_argument("--no-progress", action="store_true", help="do not show progress")
    p.add_argument("--store", metavar="JOURNAL", help="journal the run in JOURNAL (e.g. runs.db): durable, "
                   "resumable with `cleo-dask resume` (issue 10)")
    p.add_argument("--upload", action="append", default=[], metavar="PATH",
                   help="send a module (.py), a package or a directory (or a .zip/.egg) to the scheduler and "
                        "workers, for code the cluster cannot import and that cannot travel by value (repeatable)")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    """``cleo-dask run``."""
    from cleo_dask.core.spec import load_spec
    importable_cwd(args.spec)
    try:
        spec = load_spec(args.spec, agent_file=args.agent_file)
        check_json_target(args.json_out)
        _user_code_roots(args.spec)
        inputs = spec.workflow.check_inputs(inputs_from_args(args, dict(spec.inputs)))  # before any cluster starts
        remote = bool(args.address or args.scheduler_file)
        if args.no_wait and not remote:
            raise BadInput("--no-wait needs a running cluster (--address or --scheduler-file): "
                           "a LocalCluster started for the run would stop when cleo-dask exits")
        engine = engine_from_args(args)
        if args.store:
            make_durable(engine, args.store)
    except (WorkflowError, BadInput, CodeError) as exc:
        return fail(str(exc))
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # `kubectl delete job`, `docker stop`: cancel as on Ctrl+C
    try:
        return _run(engine, spec, args, inputs)
    except KeyboardInterrupt:
        print("cleo-dask: interrupted; the run was cancelled", file=sys.stderr)
        return INTERRUPTED
    finally:
        engine.close()


def _user_code_roots(target: str) -> None:
    """The spec's directory, and the directory the module named on the command line comes from,
    hold the user's own code (sent by value to a cluster that cannot import it)."""
    from cleo_dask.core import shipping as _shipping
    if os.path.exists(target):
        _shipping.add_root(os.path.dirname(os.path.abspath(target)))
        return
    name = target.partition(":")[0]
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if isinstance(file, str):
        root = os.path.dirname(os.path.abspath(file))
        for _ in range(name.count(".") + (os.path.basename(file) == "__init__.py")):
            root = os.path.dirname(root)
        _shipping.add_root(root)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def _run(engine: Any, spec: Any, args: argparse.Namespace, inputs: dict[str, Any]) -> int:
    from cleo_dask.monitor.progress import failed, outcome_json, summary_table, terminal_progress
    if args.no_wait:
        return _submit_no_wait(engine, spec, args, inputs)
    try:
        run = engine.submit(spec.workflow, spec.agent, priority=spec.priority, fail_fast=spec.fail_fast,
                            inputs=inputs)
    except (WorkflowError, CodeError) as exc:
        return fail(str(exc))
    _announce(engine, spec, run)
    try:
        if args.no_progress:
            run.wait()
        else:
            terminal_progress(run, file=sys.stderr, interval=float((_config.get("cli", {}) or {}).get("progress-interval", 0.25)))
        outcome = run.result()
    except KeyboardInterrupt:
        run.cancel()
        raise
    except ClusterLost as exc:  # the scheduler went away mid-run (with --store: resume it later)
        return fail(str(exc))
    unloadable = next((r for r in outcome.values() if isinstance(r.error, CodeError)), None)
    if unloadable is not None:   # the cluster cannot load the code: bad input, not a node failure
        return fail(str(unloadable.error))
    # with --json -, stdout is the JSON only (for jq and other parsers): the table goes to stderr
    print(summary_table(outcome), file=sys.stderr if args.json_out == "-" else sys.stdout, flush=True)
    if args.json_out:
        _write_json(args.json_out, outcome_json(run, outcome))
    return 1 if failed(outcome) else 0


def _announce(engine: Any, spec: Any, run: Any) -> None:
    print(f"run {run.id}: workflow {run.name!r}, {len(spec.workflow)} nodes, agent {spec.agent.id!r}"
          + (f"; dashboard {engine.dashboard_link}" if _has_dashboard(engine) else ""), file=sys.stderr, flush=True)


def _submit_no_wait(engine: Any, spec: Any, args: argparse.Namespace, inputs: dict[str, Any]) -> int:
    """Hand the run to the scheduler's run host (it gets every policy, and with --store its journal
    rows, without this process); print its id and exit.  A scheduler that cannot host runs
    (cleo_dask not importable there): the run is sent from here and only Dask's own retries apply."""
    from cleo_dask.hosted.attached import NoRunHost
    kwargs = dict(priority=spec.priority, fail_fast=spec.fail_fast, inputs=inputs)
    try:
        try:
            run = engine.submit(spec.workflow, spec.agent, detach=True, **kwargs)
            hosted = True
        except NoRunHost as exc:
            print(f"cleo-dask: warning: {exc}; only Dask's own retries apply to this run", file=sys.stderr)
            run = engine.submit(spec.workflow, spec.agent, **kwargs)
            engine.client.publish_dataset(**{f"cleo-run-{run.id}": list(run.futures.values())})
            hosted = False
    except (WorkflowError, CodeError, StoreError) as exc:
        return fail(str(exc))
    print(f"run {run.id}: workflow {run.name!r}, {len(spec.workflow)} nodes, agent {spec.agent.id!r}"
          + ("; carried by the scheduler (cleo-dask runs show ID --address ...)" if hosted else ""),
          file=sys.stderr, flush=True)
    if args.json_out != "-":  # with --json -, stdout is the JSON only (it holds the run id)
        print(run.id, flush=True)
    _write_json(args.json_out, {"run_id": run.id, "name": run.name, "status": "submitted",
                                "dataset": f"cleo-run-{run.id}", "hosted": hosted})
    return 0


def _has_dashboard(engine: Any) -> bool:
    try:
        return "dashboard" in engine.client.scheduler_info().get("services", {})
    except Exception:  # noqa: BLE001
        return False


def check_json_target(path: str | None) -> None:
    """``--json FILE`` is checked before the run: its directory exists and is writable."""
    if not path or path == "-":
        return
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise BadInput(f"--json {path}: is a directory, give a file name")
    if not os.path.isdir(directory):
        raise BadInput(f"--json {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise BadInput(f"--json {path}: not writable")


def _write_json(path: str | None, data: dict[str, Any]) -> None:
    if not path:
        return
    text = json.dumps(data, indent=2, default=repr)
    if path == "-":
        print(text, flush=True)
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text + "\n")
