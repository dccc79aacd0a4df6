"""What every ``cleo-dask`` command shares: exit codes, bad input, the engine from the arguments.

A command reports bad input with :func:`fail` (one line on stderr, exit :data:`BAD_INPUT`);
:func:`engine_from_args` turns ``--address`` / ``--scheduler-file`` / TLS flags into an
:class:`~cleo_dask.engine.Engine` (a LocalCluster without them), probing the scheduler first.
Defaults come from Dask's config, section ``cleo_dask.cli`` (``DASK_CLEO_DASK__CLI__ADDRESS=...``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from cleo_dask import config as _config
from cleo_dask.cli.types import seconds_type
from cleo_dask.errors import CleoError, CodeError, StoreError

#: Exit code: every node succeeded (or the command did what it was asked).
OK = 0
#: Exit code: some node failed.
FAILED = 1
#: Exit code: bad input (spec, arguments, a missing file, an unreachable scheduler, ...).
BAD_INPUT = 2
#: Exit code: interrupted (Ctrl+C, SIGTERM).
INTERRUPTED = 130


class BadInput(CleoError):
    """A problem with what the user gave (exit code 2)."""


def fail(message: str) -> int:
    """Print ``cleo-dask: error: message`` on stderr; the exit code for bad input."""
    print(f"cleo-dask: error: {message}", file=sys.stderr, flush=True)
    return BAD_INPUT


# -- arguments ----------------------------------------------------------------------------------------
def connection_args(p: argparse.ArgumentParser) -> None:
    """``--address``, ``--scheduler-file``, ``--connect-timeout`` and the TLS flags."""
    cli = _config.get("cli", {}) or {}
    p.add_argument("--address", default=cli.get("address"),
                   help="scheduler address, tcp://host:8786 or tls://host:8786 (default: start a LocalCluster)")
    p.add_argument("--scheduler-file", default=cli.get("scheduler-file"), help="a Dask scheduler file")
    p.add_argument("--connect-timeout", type=seconds_type(), default=float(_config.get("connect-timeout", 10)),
                   metavar="SECONDS", help="give up reaching the scheduler after this long (exit 2)")
    tls_args(p)


def tls_args(p: argparse.ArgumentParser) -> None:
    """``--tls-ca``, ``--tls-cert`` and ``--tls-key`` (all three or none)."""
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


def store_args(p: argparse.ArgumentParser) -> None:
    """``--store JOURNAL`` (required) and ``--results URL``: a run journal and its result store."""
    p.add_argument("--store", required=True, metavar="JOURNAL", help="the journal file (e.g. runs.db)")
    p.add_argument("--results", metavar="URL", help="the result store (default: JOURNAL.results)")


def importable_cwd(spec: str | None = None) -> None:
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


# -- the engine ---------------------------------------------------------------------------------------
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


def engine_from_args(args: argparse.Namespace) -> Any:
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


def make_durable(engine: Any, store: Any) -> None:
    """Give an engine made by the CLI a journal (as ``Engine(store=...)`` does); a bad store
    closes the engine and is bad input (exit 2)."""
    try:
        engine.use_store(store)
    except StoreError as exc:
        raise BadInput(str(exc)) from None


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


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """Within the block, SIGTERM and Ctrl+C set ``stop`` (a daemon command ends its loop cleanly);
    the previous handlers come back after.  Outside the main thread (tests) signals are left alone."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
