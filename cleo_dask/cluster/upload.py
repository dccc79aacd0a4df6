"""Code that cannot travel by value: ``Engine(upload=[...])`` / ``cleo-dask run --upload PATH``; and
saying so when the cluster cannot load a task (:class:`CodeError`, naming the module and the fix).

An upload goes to the scheduler and every worker, present and future, with Dask's own upload
plugins (what ``Client.upload_file`` registers): a ``.py`` file lands in each one's local
directory (on ``sys.path``), a ``.zip`` / ``.egg`` is put on ``sys.path``; each is imported there.
A directory is zipped first: a package (a directory with ``__init__.py``) as that package, any
other directory as the modules and packages in it (hidden entries and ``__pycache__`` left out).
Code read from a zip finds its data files with ``importlib.resources``, not by path.  The
scheduler or workers running in this very process are skipped (they import what this process
imports; the upload would re-import the user's modules under them).  Uploaded modules are pickled
by reference from then on.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from typing import Any

from distributed.diagnostics.plugin import SchedulerUploadFile, UploadFile

from cleo_dask.core import shipping as _shipping
from cleo_dask.errors import CodeError

SUFFIXES = (".py", ".zip", ".egg", ".pyz")
FIX = _shipping.FIX


def files_to_send(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[str, str]]:
    """``(path given, file to send)`` for each path (directories zipped); :class:`CodeError` naming a bad one."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if paths is None or not hasattr(paths, "__iter__"):
        raise CodeError(f"upload must be a path or a list of paths, got {paths!r}")
    out = []
    for p in paths:
        if not isinstance(p, (str, os.PathLike)) or isinstance(os.fspath(p), bytes):
            raise CodeError(f"upload: {p!r} is not a path (a str or os.PathLike)")
        path = os.path.abspath(os.fspath(p))
        if os.path.isdir(path):
            out.append((path, _zip(path)))
        elif os.path.isfile(path):
            if not path.endswith(SUFFIXES):
                raise CodeError(f"upload: {p} is not a module (.py), a package or a directory, or a .zip / .egg file")
            out.append((path, path))
        else:
            raise CodeError(f"upload: {p} not found")
    return out


def _zip(directory: str) -> str:
    """The directory as a zip in a temporary folder (named after it and its content, so that the
    same content is the same upload)."""
    package = os.path.isfile(os.path.join(directory, "__init__.py"))
    base = os.path.basename(directory.rstrip(os.sep)) or "code"
    buf = io.BytesIO()
    found = False
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for root, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
            for name in sorted(files):
                if name.startswith(".") or name.endswith((".pyc", ".pyo")):
                    continue
                full = os.path.join(root, name)
                rel = os.path.relpath(full, directory)
                found = found or name.endswith(".py")
                info = zipfile.ZipInfo(os.path.join(base, rel) if package else rel, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(full, "rb") as f:
                    zf.writestr(info, f.read())
    if not found:
        raise CodeError(f"upload: directory {directory} has no Python modules")
    data = buf.getvalue()
    name = f"{base}-{hashlib.sha256(data).hexdigest()[:12]}.zip"
    target = os.path.join(tempfile.mkdtemp(prefix="cleo-upload-"), name)
    with open(target, "wb") as f:
        f.write(data)
    return target


class _WorkerUpload(UploadFile):
    """Dask's ``UploadFile``, skipped on workers in the client's own process."""

    def __init__(self, filepath: str, client_pid: int):
        super().__init__(filepath, load=True)
        self.client_pid = client_pid

    async def setup(self, worker: Any) -> None:
        if os.getpid() != self.client_pid:
            await super().setup(worker)


def upload(client: Any, files: list[tuple[str, str]]) -> None:
    """Send ``files`` (from :func:`files_to_send`) to ``client``'s scheduler and workers;
    :class:`CodeError` if the cluster cannot import what was sent."""
    pid = os.getpid()
    try:
        scheduler_pid = client.run_on_scheduler(os.getpid)
    except Exception:  # noqa: BLE001
        scheduler_pid = None
    try:
        for given, file in files:
            name = f"cleo-upload-{os.path.basename(file)}"
            try:
                if scheduler_pid != pid:
                    client.register_plugin(SchedulerUploadFile(file, load=True), name=name)
                client.register_plugin(_WorkerUpload(file, pid), name=name)
            except Exception as exc:  # noqa: BLE001 - e.g. the module fails to import there
                detail = _syntax(exc) if isinstance(exc, SyntaxError) else exc
                raise CodeError(f"upload: {given} could not be loaded on the cluster: "
                                f"{type(exc).__name__}: {detail}") from None
            _shipping.exclude(given)
    finally:
        for given, file in files:
            if file != given:   # a zip made for the upload: the plugins hold its bytes
                shutil.rmtree(os.path.dirname(file), ignore_errors=True)


def _syntax(exc: SyntaxError) -> str:
    """A SyntaxError pickled back from the cluster keeps only its ``args`` (its ``str`` is "None")."""
    args = exc.args
    if len(args) == 2 and isinstance(args[1], tuple) and len(args[1]) >= 2:
        return f"{args[0]} (line {args[1][1]})"
    return str(args[0]) if args else str(exc)


# -- a task the cluster cannot load ---------------------------------------------------------------------
_SIGNS = ("deserializ", "No module named", "Can't get attribute", "KilledWorker")


def explain(client: Any, exc: BaseException, workflow: Any, agent: Any) -> CodeError | None:
    """For a task that could not run at all (``exc`` is not a task's own failure): a
    :class:`CodeError` saying which node's code the scheduler or a worker cannot load, and the
    fix; None if that is not what happened."""
    text = f"{type(exc).__name__}: {exc}"
    if not any(s in text for s in _SIGNS):
        return None
    graph_failed = "deserialization of the task graph" in text
    from distributed.protocol.pickle import dumps
    payloads: dict[str, bytes] = {}
    try:
        for name, node in workflow.nodes.items():
            for what, obj in (("task", node.task), ("condition", node.when), ("fallback", node.task.fallback)):
                if obj is not None:
                    payloads[f"{what} of node {name!r}"] = dumps(obj)
        payloads["the agent"] = dumps(agent)
    except Exception:  # noqa: BLE001 - cannot pickle here either: not a loading problem of the cluster
        return None
    where, problem = _first_problem(client, payloads)
    if problem is None:
        if not graph_failed:
            return None
        return CodeError(f"the scheduler could not load the tasks ({str(exc).splitlines()[0]}); if they come "
                         f"from a module it cannot import, {FIX}")
    label, error, module = problem
    what = f"module {module!r} is not importable there: " if module else ""
    return CodeError(f"the {where} cannot load the {label}: {error}; {what}{FIX}")


def _first_problem(client: Any, payloads: dict[str, bytes]) -> tuple[str, tuple[str, str, str | None] | None]:
    try:
        found = client.run_on_scheduler(try_load, payloads)
    except Exception:  # noqa: BLE001
        found = {}
    if found:
        label = next(iter(found))
        return "scheduler", (label, *found[label])
    try:
        per_worker = client.run(try_load, payloads, on_error="return")
    except Exception:  # noqa: BLE001
        per_worker = {}
    for worker, found in per_worker.items():
        if isinstance(found, dict) and found:
            label = next(iter(found))
            return f"worker {worker}", (label, *found[label])
    return "", None


def try_load(payloads: dict[str, bytes]) -> dict[str, tuple[str, str | None]]:
    """On the scheduler or a worker: the payloads that fail to unpickle here, with the error and the
    module missing (if that is the reason)."""
    import pickle
    out = {}
    for label, data in payloads.items():
        try:
            pickle.loads(data)
        except Exception as exc:  # noqa: BLE001
            missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
            out[label] = (f"{type(exc).__name__}: {exc}", missing)
    return out
