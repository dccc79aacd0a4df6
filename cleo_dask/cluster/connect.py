"""Connecting an engine to a running scheduler: a :class:`ClusterError` when it cannot be done."""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any

from distributed import Client

from cleo_dask import config as _config
from cleo_dask.errors import ClusterError
from cleo_dask.util.numbers import seconds


def connect(address: str | None, scheduler_file: str | None, security: Any, timeout: Any) -> Client:
    """A ``Client`` of the scheduler at ``address`` (or in ``scheduler_file``) within ``timeout`` s.

    A bad address, an unreachable scheduler or a failed TLS handshake is a :class:`ClusterError`
    naming the address, with Dask's exception as its ``__cause__``.
    """
    if timeout is None:
        timeout = _config.get("connect-timeout", 10)
    timeout = seconds(timeout, "timeout", positive=True)
    if address is not None and (not isinstance(address, str) or not address):
        raise ClusterError(f"the scheduler address must be a string such as 'tcp://host:8786', got {address!r}")
    deadline = time.monotonic() + timeout
    where = address
    if address is None and scheduler_file is not None:
        # Dask's Client waits for a missing scheduler file forever, whatever its timeout
        address = _address_in(os.fspath(scheduler_file), deadline)
        where = f"{address} (from {scheduler_file})"
    try:
        left = timeout if where is address else max(round(deadline - time.monotonic(), 1), 0.1)
        _probe(address, security, left)
        return Client(address, security=security, timeout=timeout, set_as_default=False)
    except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, ValueError (bad address), SSL errors
        raise ClusterError(f"cannot connect to {where} within {timeout:g} s: {type(exc).__name__}: {exc}") from exc


def _address_in(scheduler_file: str, deadline: float) -> str:
    """The address in a Dask scheduler file, waiting until ``deadline`` for it to be written."""
    problem = "it does not exist"
    while True:
        try:
            with open(scheduler_file, encoding="utf-8") as f:
                address = json.load(f)["address"]
            if isinstance(address, str) and address:
                return address
            problem = f"its address is {address!r}"
        except FileNotFoundError:
            problem = "it does not exist"
        except (OSError, ValueError, KeyError, TypeError) as exc:  # being written, or not a scheduler file
            problem = f"it holds no scheduler address ({type(exc).__name__}: {exc})"
        if time.monotonic() >= deadline:
            raise ClusterError(f"cannot connect to the scheduler of {scheduler_file}: {problem}")
        time.sleep(0.05)


def _probe(address: str, security: Any, timeout: float) -> None:
    """Connect once (TLS handshake included) and hang up; raises what Dask's ``connect`` raises.

    Done before creating a ``Client``: a ``Client`` that fails to start complains again, with a
    traceback, when it is garbage-collected.  Runs in a thread of its own, so it works where an
    event loop is already running (a notebook).
    """
    from distributed.comm import connect as comm_connect
    from distributed.security import Security

    async def attempt() -> None:
        kwargs = (security or Security()).get_connection_args("client")
        comm = await comm_connect(address, timeout=timeout, **kwargs)
        await comm.close()

    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(attempt())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            failure.append(exc)

    thread = threading.Thread(target=target, name="cleo-connect-probe", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if thread.is_alive():
        raise TimeoutError(f"no answer from {address} within {timeout:g} s")
    if failure:
        raise failure[0]
