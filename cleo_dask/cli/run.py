"""``cleo-dask run``, ``cleo-dask validate`` and ``cleo-dask cluster``: batch use from a shell.

Exit codes: 0 every node succeeded (or was skipped by its condition, or fell back), 1 some node
failed, 2 bad input (spec, arguments, a missing or unknown workflow parameter, TLS files,
unreachable scheduler), 130 interrupted.
Defaults come from Dask's config, section ``cleo_dask.cli`` (``DASK_CLEO_DASK__CLI__ADDRESS=...``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

from cleo_dask import config as _config
from cleo_dask.cli.types import count_type, port_type, seconds_type
from cleo_dask.errors import CleoError, ClusterLost, CodeError, WorkflowError

BAD_INPUT = 2
INTERRUPTED = 130


class BadInput(CleoError):
    """A problem with what the user gave (exit code 2)."""


def register(sub: Any) -> None:
    """Add ``run``, ``validate`` and ``cluster`` to the ``cleo-dask`` parser."""
    p = sub.add_parser("run", help="run a workflow spec (YAML/JSON) or package.module:workflow",
                       description="Run a workflow and wait for it, showing progress, then a summary table. "
                                   "Exit 0 if every node succeeded, 1 if any failed, 2 on bad input.")
    p.add_argument("spec", help="a spec file (.yaml/.yml/.json) or an import path package.module:name")
    _connection_args(p)
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

    v = sub.add_parser("validate", help="check a workflow spec without running it",
                       description="Validate a spec completely (schema, import paths, graph). Exit 0 if valid, 2 if not.")
    v.add_argument("spec", help="a spec file (.yaml/.yml/.json) or an import path package.module:name")
    v.add_argument("--agent-file", help="YAML/JSON file with the agent")
    v.set_defaults(func=cmd_validate)

    c = sub.add_parser("cluster", help="start a local Dask scheduler and workers until interrupted",
                       description="Start a local Dask cluster, print its address and dashboard, run until Ctrl+C.")
    local = _config.get("local-cluster", {}) or {}
    c.add_argument("--workers", type=count_type(1), default=local.get("n-workers") or os.cpu_count() or 1)
    c.add_argument("--threads-per-worker", type=count_type(1), default=local.get("threads-per-worker", 1))
    c.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    c.add_argument("--port", type=port_type(), default=8786, help="scheduler port (0: any free port)")
    c.add_argument("--dashboard-address", default="127.0.0.1:8787",
                   help="where the dashboard listens (default 127.0.0.1:8787, this machine only; '0.0.0.0:8787': "
                        "every interface, unauthenticated HTTP, see deploy/README.md; '127.0.0.1:0': any free port)")
    c.add_argument("--no-processes", action="store_true", help="run workers as threads of this process")
    c.add_argument("--scheduler-file", help="write the scheduler's address to this JSON file")
    _tls_args(c)
    c.set_defaults(func=cmd_cluster)


def _connection_args(p: argparse.ArgumentParser) -> None:
    cli = _config.get("cli", {}) or {}
    p.add_argument("--address", default=cli.get("address"),
                   help="scheduler address, tcp://host:8786 or tls://host:8786 (default: start a LocalCluster)")
    p.add_argument("--scheduler-file", default=cli.get("scheduler-file"), help="a Dask scheduler file")
    p.add_argument("--connect-timeout", type=seconds_type(), default=float(_config.get("connect-timeout", 10)),
                   metavar="SECONDS", help="give up reaching the scheduler after this long (exit 2)")
    _tls_args(p)


def _tls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-ca", metavar="PEM", help="CA certificate (TLS)")
    p.add_argument("--tls-cert", metavar="PEM", help="this side's certificate (TLS)")
    p.add_argument("--tls-key", metavar="PEM", help="this side's private key (TLS)")


def input_args(p: argparse.ArgumentParser) -> None:
    """``--input NAME=VALUE`` (repeatable) and ``--inputs-file FILE``: the workflow parameters' values."""
    p.add_argument("--input", action="append", default=[], metavar="NAME=VALUE",
                   help="a workflow parameter's value, read as JSON (3, true, [1,2], {\"a\": 1}) or else "
                        "taken as a plain string; repeatable; overrides --inputs-file and the spec's inputs")
    p.add_argument("--inputs-file", metavar="FILE", help="a JSON or YAML mapping of workflow parameter to value")


def inputs_from_args(args: argparse.Namespace, defaults: dict[str, Any] | None = None,
                     error: type[Exception] | None = None) -> dict[str, Any]:
    """The inputs ``--inputs-file`` and ``--input`` give, over ``defaults`` (a spec's ``inputs:``)."""
    from cleo_dask.core.inputs import parse_input_args, read_inputs_file
    err = error or BadInput
    return {**(defaults or {}), **read_inputs_file(args.inputs_file, err), **parse_input_args(args.input, err)}


def _fail(message: str) -> int:
    print(f"cleo-dask: error: {message}", file=sys.stderr, flush=True)
    return BAD_INPUT


def _importable_cwd(spec: str | None = None) -> None:
    """Import paths resolve against the current directory too, as with ``python -m``; and, last
    (after installed packages, so it shadows nothing), against the directory of a spec file, so
    ``cleo-dask run path/to/spec.yaml`` finds the task modules beside it from anywhere."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    if spec and spec.endswith((".yaml", ".yml", ".json")) and os.path.isfile(spec):
        where = os.path.dirname(os.path.abspath(spec))
        if where not in sys.path and where != cwd:
            sys.path.append(where)


def security_from_args(args: argparse.Namespace, role: str = "client") -> Any:
    """A ``distributed.security.Security`` from ``--tls-ca/--tls-cert/--tls-key`` (None if none given)."""
    files = {"--tls-ca": args.tls_ca, "--tls-cert": args.tls_cert, "--tls-key": args.tls_key}
    given = {k: v for k, v in files.items() if v}
    if not given:
        return None
    missing = [k for k in files if k not in given]
    if missing:
        raise BadInput(f"TLS needs all of --tls-ca, --tls-cert and --tls-key; missing {', '.join(missing)}")
    for flag, path in given.items():
        if not os.path.isfile(path):
            raise BadInput(f"TLS file not found: {flag} {path}")
    from distributed.security import Security
    kwargs = {"tls_ca_file": args.tls_ca, "require_encryption": True}
    roles = ("client", "scheduler", "worker") if role == "all" else (role,)
    for r in roles:
        kwargs[f"tls_{r}_cert"] = args.tls_cert
        kwargs[f"tls_{r}_key"] = args.tls_key
    return Security(**kwargs)


# -- run ----------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """``cleo-dask run``."""
    from cleo_dask.core.spec import load_spec
    _importable_cwd(args.spec)
    try:
        spec = load_spec(args.spec, agent_file=args.agent_file)
        check_json_target(args.json_out)
        _user_code_roots(args.spec)
        inputs = spec.workflow.check_inputs(inputs_from_args(args, dict(spec.inputs)))  # before any cluster starts
        remote = bool(args.address or args.scheduler_file)
        if args.no_wait and not remote:
            raise BadInput("--no-wait needs a running cluster (--address or --scheduler-file): "
                           "a LocalCluster started for the run would stop when cleo-dask exits")
        engine = _engine(args)
        if args.store:
            from cleo_dask.cli.runs import make_durable
            make_durable(engine, args.store)
    except (WorkflowError, BadInput, CodeError) as exc:
        return _fail(str(exc))
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


def _engine(args: argparse.Namespace) -> Any:
    """The engine for ``--address`` / ``--scheduler-file`` / TLS flags (a LocalCluster without them).

    The scheduler is probed first (one connection and handshake, within ``--connect-timeout``):
    an unreachable one, or a TLS one without certificates, is :class:`BadInput`, not a hang.
    """
    from cleo_dask.engine import Engine
    security = security_from_args(args)
    address = args.address
    if args.scheduler_file and not address:
        address = _address_in(args.scheduler_file)
    if address and "://" not in address:
        address = "tcp://" + address
    if address and address.split("://")[0] not in ("tcp", "tls", "ws", "wss", "ucx"):
        raise BadInput(f"unsupported scheduler address {address!r}: use tcp://host:port or tls://host:port")
    if address and address.startswith("tls://") and security is None:
        from distributed.security import Security
        security = Security()  # distributed.comm.tls.* from Dask's config
        if not security.tls_ca_file:
            raise BadInput(f"{address} is a TLS address: give --tls-ca, --tls-cert and --tls-key "
                           "(or set distributed.comm.tls in Dask's config)")
    upload = getattr(args, "upload", None) or None
    if not address:
        # task errors are in the summary table: keep the workers' own error logs out of the way
        return Engine(silence_logs=logging.CRITICAL, upload=upload)
    where = address + (f" (from {args.scheduler_file})" if args.scheduler_file and not args.address else "")
    _probe(address, security, args.connect_timeout, where)
    try:
        engine = Engine(address=address, security=security, timeout=args.connect_timeout, upload=upload)
    except CodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, SSL errors...: all "cannot connect"
        raise BadInput(f"cannot reach {where} within {args.connect_timeout:g} s: "
                       f"{type(exc).__name__}: {exc}") from None
    wait_workers = getattr(args, "wait_workers", 0)
    if wait_workers:
        try:
            engine.client.wait_for_workers(wait_workers, timeout=args.connect_timeout)
        except Exception as exc:  # noqa: BLE001
            engine.close()
            raise BadInput(f"{where}: fewer than {wait_workers} workers after "
                           f"{args.connect_timeout:g} s ({type(exc).__name__})") from None
    return engine


def _address_in(scheduler_file: str) -> str:
    try:
        with open(scheduler_file, encoding="utf-8") as f:
            address = json.load(f)["address"]
    except FileNotFoundError:
        raise BadInput(f"scheduler file not found: {scheduler_file}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"scheduler file {scheduler_file} has no scheduler address: {exc}") from None
    if not isinstance(address, str) or not address:
        raise BadInput(f"scheduler file {scheduler_file} has no scheduler address")
    return address


def _probe(address: str, security: Any, timeout: float, where: str) -> None:
    """Connect once (with the TLS handshake) and hang up: BadInput naming the problem if it fails.

    Done before creating a ``Client``, which would retry until its timeout and then complain
    again when garbage-collected.
    """
    import asyncio

    from distributed.comm import connect
    from distributed.security import Security

    async def attempt() -> None:
        kwargs = (security or Security()).get_connection_args("client")
        comm = await connect(address, timeout=timeout, **kwargs)
        await comm.close()

    try:
        asyncio.run(attempt())
    except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, ssl.SSLError, ...
        raise BadInput(f"cannot reach {where} within {timeout:g} s: {type(exc).__name__}: {exc}") from None


def _run(engine: Any, spec: Any, args: argparse.Namespace, inputs: dict[str, Any]) -> int:
    from cleo_dask.monitor.progress import failed, outcome_json, summary_table, terminal_progress
    try:
        run = engine.submit(spec.workflow, spec.agent, priority=spec.priority, fail_fast=spec.fail_fast,
                            inputs=inputs)
    except (WorkflowError, CodeError) as exc:
        return _fail(str(exc))
    print(f"run {run.id}: workflow {run.name!r}, {len(spec.workflow)} nodes, agent {spec.agent.id!r}"
          + (f"; dashboard {engine.dashboard_link}" if _has_dashboard(engine) else ""), file=sys.stderr, flush=True)
    if args.no_wait:
        # Published futures stay alive on the scheduler after this client leaves.  Only Dask's own
        # retries apply then: delayed retries and fallbacks need a waiting client.
        engine.client.publish_dataset(**{f"cleo-run-{run.id}": list(run.futures.values())})
        if args.json_out != "-":  # with --json -, stdout is the JSON only (it holds the run id)
            print(run.id, flush=True)
        _write_json(args.json_out, {"run_id": run.id, "name": run.name, "status": "submitted",
                                    "dataset": f"cleo-run-{run.id}"})
        return 0
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
        return _fail(str(exc))
    unloadable = next((r for r in outcome.values() if isinstance(r.error, CodeError)), None)
    if unloadable is not None:   # the cluster cannot load the code: bad input, not a node failure
        return _fail(str(unloadable.error))
    # with --json -, stdout is the JSON only (for jq and other parsers): the table goes to stderr
    print(summary_table(outcome), file=sys.stderr if args.json_out == "-" else sys.stdout, flush=True)
    if args.json_out:
        _write_json(args.json_out, outcome_json(run, outcome))
    return 1 if failed(outcome) else 0


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


# -- validate -----------------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    """``cleo-dask validate``."""
    from cleo_dask.core.spec import load_spec
    _importable_cwd(args.spec)
    try:
        spec = load_spec(args.spec, agent_file=args.agent_file)
    except WorkflowError as exc:
        return _fail(str(exc))
    wf = spec.workflow
    print(f"{args.spec}: valid: workflow {wf.name!r}, {len(wf)} nodes, agent {spec.agent.id!r}")
    for name, node in wf.nodes.items():
        print(f"  {name}" + (f" <- {', '.join(node.parents)}" if node.parents else ""))
    required = set(wf.required_parameters)
    for name in wf.parameters:
        given = f" = {json.dumps(spec.inputs[name], default=repr)} (spec inputs)" if name in spec.inputs else ""
        print(f"  parameter {name}" + (" (required)" if name in required else " (optional)") + given)
    return 0


# -- cluster ------------------------------------------------------------------------------------------
def cmd_cluster(args: argparse.Namespace) -> int:
    """``cleo-dask cluster``: a LocalCluster in the foreground."""
    from distributed import LocalCluster
    try:
        security = security_from_args(args, role="all")
    except BadInput as exc:
        return _fail(str(exc))
    if args.workers < 1 or args.threads_per_worker < 1:
        return _fail("--workers and --threads-per-worker must be >= 1")
    stop = threading.Event()
    # worker processes start with Ctrl+C ignored (they inherit SIG_IGN): the terminal sends SIGINT
    # to the whole process group, and this process stops them in order instead
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tcp even with worker threads (LocalCluster would pick inproc://, unreachable from outside)
    kwargs: dict[str, Any] = {"protocol": "tcp://"}
    if security is not None:
        kwargs.update(security=security, protocol="tls://")
    if args.scheduler_file:
        kwargs["scheduler_kwargs"] = {"scheduler_file": args.scheduler_file}
    try:
        import dask

        from cleo_dask.admission.cluster_needs import scheduler_settings
        from cleo_dask.cluster.local import dashboard_link
        with dask.config.set(scheduler_settings()):   # the settings agents need (no root-task queuing)
            cluster = LocalCluster(n_workers=args.workers, threads_per_worker=args.threads_per_worker,
                                   processes=not args.no_processes, host=args.host, scheduler_port=args.port,
                                   dashboard_address=args.dashboard_address, **kwargs)
    except Exception as exc:  # noqa: BLE001 - port in use, bad host...
        return _fail(f"cannot start the cluster: {type(exc).__name__}: {exc}")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        print(f"scheduler: {cluster.scheduler_address}", flush=True)
        print(f"dashboard: {dashboard_link(cluster)}", flush=True)
        print(f"workers: {args.workers} x {args.threads_per_worker} thread(s)", flush=True)
        print("press Ctrl+C to stop", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        cluster.close()
        print("cluster stopped", flush=True)
    return 0

