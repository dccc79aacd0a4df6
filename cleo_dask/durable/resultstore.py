"""The result store of durable runs: one file per node output (and per cache entry).

A directory beside the journal by default (``runs.db`` -> ``runs.db.results/``), or any fsspec
URL.  Workers write the outputs of durable runs themselves, right after a node finishes, so
values never travel through the client.  Every file is written atomically (a temporary file,
``fsync``, then a rename) and starts with a header (magic, payload length, SHA-256 of the
payload): a truncated or corrupted file is detected on read and raises :class:`StoreError`
naming the file, never a silently wrong value.

Layout under the root::

    runs/<run id>/<node>.res      a node's NodeOutput (value + record), cloudpickled
    cache/<k[:2]>/<k>.res         a cached task value (``@cd.task(cache=True)``)
"""
from __future__ import annotations

import hashlib
import os
import re
import struct
import uuid
from dataclasses import dataclass
from typing import Any

import cloudpickle

from cleo_dask.core.events import event, send_from_worker
from cleo_dask.core.nodeoutput import NodeOutput
from cleo_dask.durable.unpickle import current_name, loads
from cleo_dask.errors import StoreError

MAGIC = b"CLEORES1"
HEADER = struct.Struct(">8sQ32s")  # magic, payload length, sha256(payload)
SUFFIX = ".res"
#: The format version a :class:`StoreError` names when a result file cannot be read.
SCHEMA = f"result files {MAGIC.decode()}"


def encode(payload: bytes) -> bytes:
    """``payload`` with its header (what a result file holds)."""
    return HEADER.pack(MAGIC, len(payload), hashlib.sha256(payload).digest()) + payload


def decode(data: bytes, where: str) -> bytes:
    """The payload of a result file's bytes; :class:`StoreError` naming ``where`` if damaged."""
    if len(data) < HEADER.size:
        raise StoreError(f"result file {where} is truncated: {len(data)} bytes, shorter than its header")
    magic, length, digest = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise StoreError(f"result file {where} is not a cleo_dask result (bad header)")
    payload = data[HEADER.size:]
    if len(payload) != length:
        raise StoreError(f"result file {where} is truncated: {len(payload)} of {length} payload bytes")
    if hashlib.sha256(payload).digest() != digest:
        raise StoreError(f"result file {where} is corrupted: checksum mismatch")
    return payload


def safe_name(name: str) -> str:
    """A file name for node ``name``: readable prefix plus a hash (names may hold any character)."""
    prefix = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60].lstrip(".") or "node"
    return f"{prefix}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"


_FS: dict[tuple[str, tuple], Any] = {}


@dataclass(frozen=True)
class ResultStore:
    """Where durable runs keep results: a local directory or an fsspec URL (picklable, small)."""

    url: str
    storage_options: tuple[tuple[str, Any], ...] = ()
    fsync: bool = True

    @property
    def local(self) -> bool:
        """True for a plain local directory (written with ``os`` calls, ``fsync`` included)."""
        return "://" not in self.url or self.url.startswith("file://")

    def _root(self) -> str:
        return self.url[len("file://"):] if self.url.startswith("file://") else self.url

    def _fs(self) -> Any:
        key = (self.url, self.storage_options)
        if key not in _FS:
            import fsspec
            fs, _ = fsspec.core.url_to_fs(self.url, **dict(self.storage_options))
            _FS[key] = fs
        return _FS[key]

    # -- paths --------------------------------------------------------------------------------
    def node_path(self, run_id: str, node: str) -> str:
        """Where node ``node`` of run ``run_id`` keeps its output."""
        return self._join("runs", run_id, safe_name(node) + SUFFIX)

    def cache_path(self, key: str) -> str:
        """Where the cache entry ``key`` lives."""
        return self._join("cache", key[:2], key + SUFFIX)

    def _join(self, *parts: str) -> str:
        root = self._root() if self.local else self.url
        return "/".join([root.rstrip("/"), *parts])

    # -- bytes --------------------------------------------------------------------------------
    def write(self, path: str, payload: bytes) -> int:
        """Write ``payload`` (with its header) to ``path`` atomically; returns the file's size."""
        data = encode(payload)
        directory, name = path.rsplit("/", 1)
        tmp = f"{directory}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        if self.local:
            os.makedirs(directory, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            fs = self._fs()
            fs.makedirs(directory, exist_ok=True)
            fs.pipe_file(tmp, data)
            fs.mv(tmp, path)
        return len(data)

    def read(self, path: str) -> bytes:
        """The payload stored at ``path``; :class:`StoreError` naming the file if missing or damaged."""
        try:
            if self.local:
                with open(path, "rb") as f:
                    data = f.read()
            else:
                data = self._fs().cat_file(path)
        except FileNotFoundError:
            raise StoreError(f"result file {path} is missing") from None
        except OSError as exc:
            raise StoreError(f"result file {path} cannot be read: {exc}") from None
        return decode(data, path)

    def read_output(self, path: str) -> bytes:
        """The payload at ``path`` if it is a node's output (checksum and content); else :class:`StoreError`."""
        payload = self.read(path)
        first = first_global(payload)
        if first is None or current_name(*first) != OUTPUT_CLASS:
            raise StoreError(f"result file {path} does not hold a node's output (a file from elsewhere?)")
        return payload

    def exists(self, path: str) -> bool:
        """Whether a (complete or not) file exists at ``path``."""
        return os.path.exists(path) if self.local else bool(self._fs().exists(path))

    def remove_run(self, run_id: str) -> None:
        """Delete every stored output of run ``run_id`` (cache entries stay)."""
        path = self._join("runs", run_id)
        if self.local:
            import shutil
            shutil.rmtree(path, ignore_errors=True)
        elif self._fs().exists(path):
            self._fs().rm(path, recursive=True)

    def load(self, path: str) -> Any:
        """The object stored at ``path`` (checked, then unpickled)."""
        payload = self.read(path)
        try:
            return loads(payload, where=f"result file {path}", schema=SCHEMA)
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. the task's module is gone
            raise StoreError(f"result file {path} cannot be unpickled: {type(exc).__name__}: {exc}") from None

    # -- worker side: called by the task wrapper (cleo_dask.core.worker) for durable runs -----------
    def save_output(self, run_id: str, key: str, node: str, out: Any) -> None:
        """Store a finished node's output; an output that cannot be pickled (or written) is reported
        with an ``unstorable`` event and the node stays not resumable; the run goes on."""
        try:
            payload = cloudpickle.dumps(out)
        except Exception as exc:  # noqa: BLE001
            _report("unstorable", run_id, node=node, key=key,
                    error=f"its result cannot be pickled ({type(exc).__name__}: {exc})"[:500])
            return
        try:
            self.write(self.node_path(run_id, node), payload)
        except Exception as exc:  # noqa: BLE001 - a full disk must not fail the node itself
            _report("unstorable", run_id, node=node, key=key, error=f"its result could not be written: {exc!r}"[:500])

    def cache_key(self, call: Any, args: tuple, kwargs: dict[str, Any], run_id: str) -> str | None:
        """The cache key of one call of a ``cache=`` task (``None``: not cacheable this time).

        ``cache=True``: SHA-256 of the task's module, qualified name and code plus the cloudpickle of
        the agent and the inputs.  ``cache=fn``: ``fn(agent, **inputs)`` replaces agent and inputs.
        """
        spec = call.task
        if not spec.cache or call.mode != "task":
            return None
        h = hashlib.sha256(code_fingerprint(spec.fn))
        try:
            material = spec.cache(*args, **kwargs) if callable(spec.cache) else (args, sorted(kwargs.items()))
            h.update(cloudpickle.dumps(material))
        except Exception as exc:  # noqa: BLE001 - inputs that do not pickle: just not cached
            _report("cache", run_id, node=call.name, hit=False, cache_key=None, error=repr(exc)[:300])
            return None
        return h.hexdigest()

    def cache_get(self, key: str, node: str, run_id: str) -> tuple[Any] | None:
        """``(value,)`` if the cache holds ``key`` (a damaged entry raises :class:`StoreError`)."""
        path = self.cache_path(key)
        if not self.exists(path):
            return None
        value = self.load(path)
        _report("cache", run_id, node=node, hit=True, cache_key=key)
        return (value,)

    def cache_put(self, key: str, value: Any, node: str, run_id: str) -> None:
        """Keep ``value`` under ``key`` (silently skipped if it cannot be pickled or written)."""
        try:
            self.write(self.cache_path(key), cloudpickle.dumps(value))
            _report("cache", run_id, node=node, hit=False, cache_key=key)
        except Exception as exc:  # noqa: BLE001
            _report("cache", run_id, node=node, hit=False, cache_key=None, error=repr(exc)[:300])


def load_output(store: ResultStore, run_id: str, node: str) -> Any:
    """The Dask task of a resumed run's already finished node: its stored output, read on a worker."""
    path = store.node_path(run_id, node)
    out = store.load(path)
    if not isinstance(out, NodeOutput):
        raise StoreError(f"result file {path} does not hold a node's output but a {type(out).__name__}")
    return out


#: The class a node's output file unpickles to, as (module, name).
OUTPUT_CLASS = ("cleo_dask.core.nodeoutput", "NodeOutput")


def first_global(payload: bytes) -> tuple[str, str] | None:
    """The (module, name) of the first class or function a pickle refers to, read without
    unpickling (a pickled NodeOutput starts with its class); ``None`` if there is none or the
    bytes are not a pickle."""
    import pickletools
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(payload):
            if op.name == "GLOBAL":
                module, _, name = str(arg).partition(" ")
                return module, name
            if op.name == "STACK_GLOBAL":
                return (strings[-2], strings[-1]) if len(strings) >= 2 else None
            if isinstance(arg, str):
                strings.append(arg)
            elif op.name not in ("PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                return None  # a pickle of something else (a list, an int...)
    except Exception:  # noqa: BLE001 - not a pickle at all
        return None
    return None


def code_fingerprint(fn: Any) -> bytes:
    """Module, qualified name and bytecode (constants and nested functions included) of ``fn``."""
    fn = getattr(fn, "__func__", fn)
    code = getattr(fn, "__code__", None)
    if code is None:
        code = getattr(getattr(type(fn), "__call__", None), "__code__", None)
    parts = [str(getattr(fn, "__module__", type(fn).__module__)),
             str(getattr(fn, "__qualname__", type(fn).__qualname__))]
    if code is not None:
        parts.append(_code_text(code))
    return "\x00".join(parts).encode()


def _code_text(code: Any) -> str:
    consts = [(_code_text(c) if hasattr(c, "co_code") else repr(c)) for c in code.co_consts]
    return f"{code.co_code.hex()}|{consts}|{code.co_names}"


def _report(kind: str, run_id: str, **fields: Any) -> None:
    send_from_worker(event(kind, run_id, **fields))
