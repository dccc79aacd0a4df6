"""``cleo-dask serve``: a long-running process that fires the schedules kept in a store.

It takes the store's lease first (refusing, exit 2, when another live process holds it), then
connects to the cluster (``--address`` / ``--scheduler-file``, else a ``LocalCluster`` from the
``cleo_dask.local-cluster`` config) and runs the scheduling loop until SIGTERM / SIGINT.  On start
it reloads every schedule and applies the misfire policy to what fell due while it was down.
Schedules added, paused or removed meanwhile with ``cleo-dask schedule ...`` are picked up
within ``cleo_dask.schedules.poll-interval`` seconds.
Exit codes: 0 stopped by a signal, 2 bad input (unusable store, another serve holds it,
unreachable scheduler).
"""
from __future__ import annotations

import argparse
import gc
import threading
from typing import Any

from cleo_dask.cli.common import stop_on_signals, OK, connection_args, engine_from_args, fail, importable_cwd
from cleo_dask.errors import CleoError


def register(sub: Any) -> None:
    """Add ``serve`` to the ``cleo-dask`` parser."""
    s = sub.add_parser("serve", help="fire the schedules kept in a store until stopped",
                       description="Hold the schedules of --store and start their runs on the cluster "
                                   "(--address / --scheduler-file, else a LocalCluster) until SIGTERM/Ctrl+C. "
                                   "A second serve on the same store is refused (exit 2).")
    s.add_argument("--store", required=True, help="the SQLite store (created if missing)")
    connection_args(s)
    s.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """``cleo-dask serve``."""
    return serve(args)


def serve(args: Any, *, stop: threading.Event | None = None) -> int:
    """Serve the schedules of ``args.store`` until ``stop`` is set or a signal arrives; the exit code."""
    from cleo_dask.schedules.store import ScheduleStore
    from cleo_dask.schedules.settings import setting

    importable_cwd()
    try:
        store = ScheduleStore(args.store)
        ok, who = store.acquire_lease(float(setting("lease-ttl", 30)))
    except CleoError as exc:
        return fail(str(exc))
    if not ok:
        store.close()
        return fail(f"refusing to serve {args.store}: {who}. Only one serve process may fire the schedules of a "
                    "store; stop the other one (or wait until its lease expires)")
    try:
        args.wait_workers = getattr(args, "wait_workers", 0)
        engine = engine_from_args(args)
    except CleoError as exc:
        store.release_lease()
        store.close()
        return fail(str(exc))
    stop = stop or threading.Event()
    with stop_on_signals(stop):
        try:
            engine.use_store(args.store)  # the run journal shares the file: scheduled runs are journaled
            scheduler = engine.serve_schedules(store)
            # a long-lived daemon: what exists now (modules, the cluster) lives as long as it does, so keep it
            # out of the garbage collector's full passes, whose pauses would stall every thread (and so firings)
            gc.collect()
            gc.freeze()
            active = scheduler.schedules()
            address = engine.client.scheduler.address if engine.client.scheduler else "?"
            print(f"cleo-dask serve: {len(active)} schedule(s) from {args.store}; scheduler {address}"
                  + (f"; dashboard {engine.dashboard_link}" if engine.dashboard_link else ""), flush=True)
            while not stop.wait(0.5):
                pass
            print("cleo-dask serve: stopping", flush=True)
            return OK
        except CleoError as exc:
            return fail(str(exc))
        finally:
            engine.close()
