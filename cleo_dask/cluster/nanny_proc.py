"""The process of one worker of the engine's LocalCluster: a Nanny, run by :mod:`cleo_dask.cluster.local`.

Loaded with ``runpy.run_path`` by the process's ``python -c`` boot code, without importing the
cleo_dask package (the worker does not need it to start), so it imports only what Dask has.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import sys
import threading
from typing import Any

import dask
# imported before the spec arrives: the engine's process starts this one ahead, while it starts the scheduler
from distributed import Nanny
from distributed.compatibility import asyncio_run
from distributed.config import get_loop_factory
from distributed.utils import silence_logging_cmgr


def serve_nanny(reply_fd: int) -> int:
    """Run a Nanny as the spec on stdin says; report ``{"address", "worker"}`` or ``{"error"}`` on
    ``reply_fd``; exit when stdin closes (the engine's process closed it or is gone)."""
    try:
        spec = pickle.load(sys.stdin.buffer)
    except EOFError:   # started ahead, then not needed
        return 0
    if spec.get("start_method"):   # for this process only: the worker gets the user's setting back
        key = "distributed.worker.multiprocessing-method"
        spec["options"]["config"] = {**(spec["options"].get("config") or {}), key: dask.config.get(key)}
        dask.config.set({key: spec["start_method"]})
    quiet = spec["options"].get("silence_logs")
    # as LocalCluster silences its process's logs while it lives (the Nanny does only while it runs)
    with silence_logging_cmgr(quiet) if quiet else contextlib.nullcontext():
        return asyncio_run(_serve(spec, reply_fd), loop_factory=get_loop_factory())


async def _serve(spec: dict[str, Any], reply_fd: int) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    threading.Thread(target=_wait_for_eof, args=(loop, stop), daemon=True, name="cleo-parent-watch").start()
    # no SIGTERM handler: it kills this process, and its worker follows (the worker watches its parent);
    # an asyncio one would also catch the SIGTERMs of a forked worker (it shares the wake-up fd)
    nanny = None
    try:
        nanny = Nanny(spec["scheduler"], name=spec["name"], **spec["options"])
        # a failure is reported once, by the engine; the Nanny would log it twice with tracebacks
        with silence_logging_cmgr(logging.CRITICAL):
            await nanny
    except Exception as exc:  # noqa: BLE001 - reported to the engine as one line
        _reply(reply_fd, {"error": f"the worker could not start: {_root_cause(exc)}"})
        if nanny is not None:
            with contextlib.suppress(Exception):
                await nanny.close()
        return 1
    _reply(reply_fd, {"address": nanny.address, "worker": nanny.worker_address})
    finished = asyncio.ensure_future(nanny.finished())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([finished, stopped], return_when=asyncio.FIRST_COMPLETED)
    if not finished.done():
        await nanny.close(reason="cleo-engine-closed")
    stopped.cancel()
    return 0


def _wait_for_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    # os.read, not sys.stdin: a daemon thread holding the buffer's lock would abort the exit
    with contextlib.suppress(Exception):
        while os.read(0, 65536):
            pass
    with contextlib.suppress(RuntimeError):  # the loop is already closed
        loop.call_soon_threadsafe(stop.set)


def _reply(fd: int, msg: dict[str, Any]) -> None:
    with os.fdopen(fd, "wb") as f:
        f.write(json.dumps(msg).encode() + b"\n")


def _root_cause(exc: BaseException) -> str:
    """The error behind Dask's "Nanny failed to start." wrappers."""
    while exc.__cause__ is not None and str(exc).endswith("failed to start."):
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".rstrip(": ")
