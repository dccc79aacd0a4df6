"""The LocalCluster an ``Engine()`` starts, with workers that never re-import the user's script.

A plain ``LocalCluster`` starts each worker with a ``Nanny`` in this process, which spawns the
worker with multiprocessing's ``spawn``: the child re-imports this process's ``__main__``, so a
script without an ``if __name__ == "__main__":`` guard runs again in every worker (and starts
clusters there).  Here each Nanny lives in a fresh ``python -c`` process of its own
(:class:`WorkerProcess`, a :class:`distributed.deploy.spec.ProcessInterface`), whose main module
is not the user's; the scheduler stays in this process (``cluster.scheduler``).  The Nanny still
restarts its worker when it dies; on Linux it forks it (``worker-start-method``): its process
holds nothing of the user's, and a fork saves a second Python start and Dask import per worker,
so ``Engine()`` starts about as fast as with Nannies in this process (the processes are also
started before the scheduler, so they import Dask meanwhile).  What a Nanny started here would
have inherited travels along:
``sys.path`` (the script's directory, the current one, ``PYTHONPATH``) and Dask's config as set in
this process at the time the worker starts (``dask.config.set``, cleo_dask's settings).

The Nanny's process exits when this process goes away (its stdin, a pipe from here, closes).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import subprocess
import sys
import threading
from typing import Any

import dask
from distributed import LocalCluster
from distributed.deploy.spec import ProcessInterface

from cleo_dask import config as _config
from cleo_dask.admission.cluster_needs import scheduler_settings
from cleo_dask.errors import CleoError

#: runs in the worker's process: sys.path and Dask's config first (before distributed is imported,
#: so config read at import time, like logging, is the user's), then the Nanny
#: (cleo_dask's package is not imported there: its import would only delay the worker)
_BOOT = (
    "import pickle, runpy, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"   # Ctrl+C: the engine's process closes us in order
    "sys.path[:] = pickle.load(sys.stdin.buffer)\n"
    "import dask.config\n"
    "dask.config.update(dask.config.global_config, pickle.load(sys.stdin.buffer), priority='new')\n"
    "sys.exit(runpy.run_path(sys.argv[2])['serve_nanny'](int(sys.argv[1])))\n"
)
_NANNY_PROC = os.path.join(os.path.dirname(__file__), "nanny_proc.py")


def local_cluster_options(overrides: dict[str, Any]) -> dict[str, Any]:
    """``LocalCluster`` options from ``cleo_dask.local-cluster`` in Dask's config, then ``overrides``."""
    conf = dict(_config.get("local-cluster", {}) or {})
    opts: dict[str, Any] = {
        "n_workers": conf.get("n-workers") or os.cpu_count() or 1,
        "threads_per_worker": conf.get("threads-per-worker", 1),
        "processes": conf.get("processes", True),
        "dashboard_address": conf.get("dashboard-address", "127.0.0.1:0"),
    }
    opts.update(overrides)
    return opts


def start_local_cluster(overrides: dict[str, Any]) -> LocalCluster:
    """The engine's own cluster: scheduler in this process, each worker's Nanny in a process of its own.

    ``processes=False`` (or a ``worker_class`` of the user's) gives a plain ``LocalCluster``.
    A worker that cannot start is one :class:`CleoError` naming the cause.
    """
    opts = local_cluster_options(overrides)
    if not (opts.get("processes") and "worker_class" not in opts and hasattr(os, "fork")):  # POSIX: pass_fds
        with dask.config.set(scheduler_settings()):  # see _cluster_needs: no root-task queuing
            return LocalCluster(**opts)
    opts["worker_class"] = WorkerProcess
    # the worker processes import Dask while this one starts the scheduler
    n = opts.get("n_workers")
    warm = _prestart(n if isinstance(n, int) else 0)
    try:
        with dask.config.set(scheduler_settings()):
            return LocalCluster(**opts)
    except WorkerStartError as exc:
        raise CleoError(f"cd.Engine(): {exc}") from None
    finally:
        for launch in _take_back(warm):
            launch.stop()


def dashboard_link(cluster: LocalCluster) -> str:
    """The link to ``cluster``'s dashboard, on the interface it listens on (Dask's link names the
    scheduler's host, which is not where a dashboard bound to another interface answers)."""
    from distributed.comm.utils import get_tcp_server_addresses
    from distributed.utils import format_dashboard_link
    server = getattr(cluster.scheduler, "http_server", None)
    if server is None:
        return cluster.dashboard_link
    host, port = get_tcp_server_addresses(server)[0][:2]
    if host in ("0.0.0.0", "::", ""):   # every interface: the scheduler's host is one of them
        return cluster.dashboard_link
    return format_dashboard_link(f"[{host}]" if ":" in host else host, port)


class WorkerStartError(CleoError):
    """A worker process of the engine's cluster could not start."""


class WorkerProcess(ProcessInterface):
    """A ``distributed.Nanny`` (and the worker it keeps alive) in a new ``python`` process.

    The options are the Nanny's, as ``LocalCluster`` gives them to its ``worker_class``.
    """

    def __init__(self, scheduler: str, name: Any = None, **nanny_options: Any):
        super().__init__()
        self.scheduler = scheduler
        self.name = name
        self.options = nanny_options
        self.launch: _Launch | None = None
        self.worker_address: str | None = None

    async def start(self) -> None:
        """Start the process (or take one started ahead); return once its worker has joined."""
        import cloudpickle
        try:
            spec = cloudpickle.dumps({"scheduler": self.scheduler, "name": self.name, "options": self.options,
                                      "start_method": _start_method()})
        except Exception as exc:  # noqa: BLE001 - an option of the user's that does not pickle
            raise WorkerStartError(f"the worker options cannot be sent to a worker process: {exc}") from None
        timeout = float(_config.get("local-cluster.worker-start-timeout", 60) or 60)
        reply = await asyncio.get_running_loop().run_in_executor(None, self._start, spec, timeout)
        if "error" in reply:
            await self.close()
            raise WorkerStartError(reply["error"] + _FIX)
        self.address, self.worker_address = reply["address"], reply["worker"]
        await super().start()

    def _start(self, spec: bytes, timeout: float) -> dict[str, Any]:
        """In a thread: a process, its spec, its one-line reply."""
        self.launch = _take_warm() or _Launch()
        return self.launch.run(spec, timeout)

    async def close(self) -> None:
        """Let the Nanny close its worker (its stdin closes), then make sure the process is gone."""
        launch, self.launch = self.launch, None
        if launch is not None:
            await asyncio.get_running_loop().run_in_executor(None, launch.stop)
        await super().close()


class _Launch:
    """A ``python`` process for one Nanny: started at once (it imports Dask), given its spec later."""

    def __init__(self) -> None:
        self.replies, write_fd = os.pipe()
        try:
            self.process = subprocess.Popen([sys.executable, "-c", _BOOT, str(write_fd), _NANNY_PROC],
                                            stdin=subprocess.PIPE, pass_fds=(write_fd,))
        except BaseException:
            os.close(self.replies)
            raise
        finally:
            os.close(write_fd)
        self._send(pickle.dumps(list(sys.path)), _pickled_config())

    def _send(self, *chunks: bytes) -> None:
        try:
            for chunk in chunks:
                self.process.stdin.write(chunk)
            self.process.stdin.flush()
        except OSError:
            pass  # it died already: its exit code says so

    def run(self, spec: bytes, timeout: float) -> dict[str, Any]:
        """Send the spec, wait for the reply: ``{"address", "worker"}`` or ``{"error"}``."""
        self._send(spec)
        timed_out = threading.Event()
        timer = threading.Timer(timeout, lambda: (timed_out.set(), self.kill()))
        timer.start()
        try:
            fd, self.replies = self.replies, -1
            with os.fdopen(fd, "rb") as replies:
                line = replies.readline()
        finally:
            timer.cancel()
        if line:
            return json.loads(line)
        code = self.process.wait()
        if timed_out.is_set():
            return {"error": f"no worker within {timeout:g} s (cleo_dask.local-cluster.worker-start-timeout)"}
        return {"error": f"the worker process exited with code {code} before it started (its output is above)"}

    def kill(self) -> None:
        """Kill the process and its children (the worker, Dask's resource tracker)."""
        proc = self.process
        if proc.poll() is not None:
            return
        with contextlib.suppress(Exception):
            import psutil
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
        with contextlib.suppress(ProcessLookupError):
            proc.kill()

    def stop(self) -> None:
        """Close its stdin (the Nanny closes its worker and exits); kill it if it takes too long."""
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        if self.replies >= 0:   # it never got a spec
            fd, self.replies = self.replies, -1
            os.close(fd)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
            self.process.wait()


_warm: list[_Launch] = []
_warm_lock = threading.Lock()


def _prestart(n: int) -> list[_Launch]:
    launches = []
    with contextlib.suppress(OSError):  # out of processes: WorkerProcess.start will say so
        for _ in range(n):
            launches.append(_Launch())
    with _warm_lock:
        _warm.extend(launches)
    return launches


def _take_warm() -> _Launch | None:
    with _warm_lock:
        return _warm.pop(0) if _warm else None


def _take_back(launches: list[_Launch]) -> list[_Launch]:
    """Those of ``launches`` no worker took."""
    with _warm_lock:
        left = [launch for launch in launches if launch in _warm]
        for launch in left:
            _warm.remove(launch)
    return left


def _start_method() -> str | None:
    """How each Nanny starts its worker process: ``cleo_dask.local-cluster.worker-start-method``;
    by default ``fork`` on Linux (the Nanny's process holds nothing of the user's, so a fork is
    safe there and saves a Python start and Dask import per worker), else Dask's own setting."""
    method = _config.get("local-cluster.worker-start-method")
    if method:
        return str(method)
    return "fork" if sys.platform.startswith("linux") else None


def _pickled_config() -> bytes:
    import cloudpickle
    return cloudpickle.dumps(_portable(dask.config.config))


_FIX = ("; fix what its message says, or run the workers as threads of this process with "
        "cd.Engine(processes=False) (config cleo_dask.local-cluster.processes: false)")


def _portable(config: Any) -> Any:
    """Dask's config without the values that cannot travel to another process."""
    import cloudpickle
    try:
        cloudpickle.dumps(config)
        return config
    except Exception:  # noqa: BLE001
        pass
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            with contextlib.suppress(_Drop):
                out[key] = _portable_leaf(value)
        return out
    return _portable_leaf(config)


class _Drop(Exception):
    pass


def _portable_leaf(value: Any) -> Any:
    if isinstance(value, dict):
        return _portable(value)
    import cloudpickle
    try:
        cloudpickle.dumps(value)
    except Exception:  # noqa: BLE001
        raise _Drop from None
    return value
