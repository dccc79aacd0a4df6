"""``cleo-dask cluster``: a local Dask scheduler and workers in the foreground until interrupted.

Exit codes: 0 stopped by Ctrl+C / SIGTERM, 2 bad input (TLS files, a port in use, a bad host).
"""
from __future__ import annotations

import argparse
import os
import signal
import threading
from typing import Any

from cleo_dask import config as _config
from cleo_dask.cli.common import BadInput, fail, security_from_args, tls_args
from cleo_dask.cli.types import count_type, port_type


def register(sub: Any) -> None:
    """Add ``cluster`` to the ``cleo-dask`` parser."""
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
    tls_args(c)
    c.set_defaults(func=cmd_cluster)


def cmd_cluster(args: argparse.Namespace) -> int:
    """``cleo-dask cluster``: a LocalCluster in the foreground."""
    from distributed import LocalCluster
    try:
        security = security_from_args(args, role="all")
    except BadInput as exc:
        return fail(str(exc))
    if args.workers < 1 or args.threads_per_worker < 1:
        return fail("--workers and --threads-per-worker must be >= 1")
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
        return fail(f"cannot start the cluster: {type(exc).__name__}: {exc}")
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
