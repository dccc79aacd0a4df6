"""Code travel: the user's own modules go to the cluster by value, with the graph.

A *user module* is a ``.py`` file of the user's own code: under the current directory, the
running script's directory, ``sys.path[0]``, a directory given to :func:`add_root` (the CLI adds
the spec's directory and the module named on the command line) or listed in the
``cleo_dask.code.roots`` setting; and not in site-packages / dist-packages, the standard library,
cleo_dask, dask, distributed or cloudpickle.

Before a submission the engine asks its cluster, once per scheduler address and module
(:func:`ensure`), whether the scheduler and the workers import each user module from the same
source.  Those it cannot are registered with ``cloudpickle.register_pickle_by_value``.  Dask
pickles a graph with the standard pickle first, which ignores that registry (a module function
goes by reference), so cleo's own objects see to it: a ``TaskSpec`` of such a module reduces to
its fields cloudpickled once (``_task.py``), conditions and errors in a ``NodeCall`` go through
:func:`portable`, the agent and literal inputs through :func:`graph_value` / :func:`data_node`.

Modules the cluster does import (a LocalCluster on this machine, code installed there or sent
with ``upload=``) stay pickled by reference: by value each task gets its own copy of the module
globals it uses (a module-level lock would not pickle, a counter would not be shared).
"""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
import sys
import sysconfig
import threading
import types
import weakref
from collections.abc import Iterable
from typing import Any

import cloudpickle

from cleo_dask import config as _config
from cleo_dask.errors import CodeError

#: top-level packages never sent by value: they must be installed where the cluster runs
ENGINE_PACKAGES = frozenset({"cleo_dask", "dask", "distributed", "cloudpickle"})

#: what to do about code the cluster cannot import (ends the messages of :class:`CodeError`)
FIX = ("install it where the scheduler and workers run, or send it with cleo-dask run --upload PATH / "
       "Engine(upload=[PATH])")

_lock = threading.RLock()
_digests: dict[str, str | None] = {}    # module name -> SHA-256 of its source (a user module) or None
_extra_roots: list[str] = []
_excluded: list[str] = []               # uploaded paths: importable on the cluster, by reference
_checked: dict[str, tuple[set[str], Any]] = {}   # scheduler address -> (modules asked about, sys.modules state)
_lacking: dict[str, set[str]] = {}      # scheduler address -> user modules that cluster cannot import
_ours: set[str] = set()                  # modules registered by value here (for the cluster last sent to)
_active: str | None = None               # the scheduler address the by-value registry is set for
_registry: frozenset[str] = frozenset()  # cloudpickle's by-value registry as last seen
_generation = 0                          # bumped whenever that registry changes
_blobs: weakref.WeakKeyDictionary[Any, tuple[int, bytes]] = weakref.WeakKeyDictionary()


def generation() -> int:
    """A number that changes whenever the set of modules pickled by value changes."""
    return _generation


def add_root(path: str | os.PathLike[str]) -> None:
    """Treat modules under ``path`` (a directory, or a file's directory) as the user's own code."""
    real = _prefix(path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path)))
    with _lock:
        if real not in _extra_roots:
            _extra_roots.append(real)
            _forget_decisions()


def exclude(path: str | os.PathLike[str]) -> None:
    """Modules under ``path`` (a file or directory sent to the cluster) go by reference from now on."""
    real = os.path.realpath(path)
    with _lock:
        where = real + (os.sep if os.path.isdir(real) else "")
        _excluded.append(where)
        for name in cloudpickle.list_registry_pickle_by_value():
            file = getattr(sys.modules.get(name), "__file__", None)
            if isinstance(file, str) and _under(os.path.realpath(file), [where]):
                cloudpickle.unregister_pickle_by_value(sys.modules[name])
                _ours.discard(name)
                for lacking in _lacking.values():
                    lacking.discard(name)
        _forget_decisions()
    refresh()


def _forget_decisions() -> None:
    _digests.clear()
    for address, (asked, _) in list(_checked.items()):
        _checked[address] = (asked, None)   # look at sys.modules again at the next submission


def _prefix(path: str | os.PathLike[str]) -> str:
    return os.path.realpath(os.path.abspath(path)).rstrip(os.sep) + os.sep


def _under(path: str, dirs: Iterable[str]) -> bool:
    return any(path == d or path.startswith(d) for d in dirs)


@functools.lru_cache(maxsize=1)
def _installed() -> tuple[str, ...]:
    """Where installed code lives: the standard library and site-packages."""
    dirs = {p for k, p in sysconfig.get_paths().items() if k in ("stdlib", "platstdlib", "purelib", "platlib") and p}
    try:
        import site
        dirs.update(site.getsitepackages())
        dirs.add(site.getusersitepackages())
    except Exception:  # noqa: BLE001 - some embedded interpreters have no site module
        pass
    return tuple(_prefix(d) for d in dirs)


def _roots() -> list[str]:
    roots: list[str] = []
    try:
        roots.append(os.getcwd())
    except OSError:   # the current directory was deleted
        pass
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if isinstance(main, str):
        roots.append(os.path.dirname(os.path.abspath(main)))
    if sys.path and sys.path[0] and os.path.isdir(sys.path[0]):
        roots.append(sys.path[0])
    roots.extend(str(r) for r in (_config.get("code.roots", None) or ()))
    return [_prefix(r) for r in roots] + _extra_roots


def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:32]


def user_module(name: str, module: Any, roots: list[str] | None = None) -> str | None:
    """The source digest of ``module`` if it is the user's own code (see the module docs), else None."""
    try:
        return _digests[name]
    except KeyError:
        pass
    digest = None
    path = getattr(module, "__file__", None)
    if (name not in ("__main__", "__mp_main__") and name.partition(".")[0] not in ENGINE_PACKAGES
            and isinstance(path, str) and path.endswith(".py")):
        real = os.path.realpath(path)
        parts = real.split(os.sep)
        if ("site-packages" not in parts and "dist-packages" not in parts and not _under(real, _installed())
                and not _under(real, _excluded) and _under(real, roots if roots is not None else _roots())):
            try:
                digest = _file_digest(real)
            except OSError:
                digest = None
    _digests[name] = digest
    return digest


# -- asking the cluster ------------------------------------------------------------------------------
def ensure(client: Any) -> None:
    """Before a submission: register by value the user modules ``client``'s cluster cannot import.

    Asked once per scheduler address and module; when no module was imported since the last
    submission this is two comparisons.  ``cleo_dask.code.by-value: false`` turns it off.
    cloudpickle's by-value registry is one per process, so it is set for the cluster being sent
    to: a module only another cluster lacks goes by reference here (it may hold a lock or another
    object that does not pickle, which would make it a :class:`CodeError` for no reason).
    """
    modules = sys.modules
    state = (len(modules), next(reversed(modules), None))
    address = str(getattr(getattr(client, "scheduler", None), "address", None) or id(client))
    entry = _checked.get(address)
    if entry is None or entry[1] != state:
        if not _config.get("code.by-value", True):
            return
        with _lock:
            asked = set(entry[0]) if entry is not None else set()
            roots = _roots()
            new = {}
            for name, mod in list(modules.items()):
                if name not in asked and mod is not None:
                    digest = user_module(name, mod, roots)
                    if digest is not None:
                        new[name] = digest
            if new:
                _lacking.setdefault(address, set()).update(_ask(client, new))
                asked.update(new)
            _checked[address] = (asked, state)
            _sync(address)
    elif _active != address:
        with _lock:
            _sync(address)
    refresh()


def _sync(address: str) -> None:
    """Register by value exactly the modules the cluster at ``address`` lacks (those registered
    for another cluster are unregistered; a module the user registered is left alone)."""
    global _active
    want = _lacking.get(address, set())
    for name in _ours - want:
        mod = sys.modules.get(name)
        if mod is not None:
            try:
                cloudpickle.unregister_pickle_by_value(mod)
            except ValueError:   # unregistered by the user meanwhile
                pass
    _ours.intersection_update(want)
    registered = set(cloudpickle.list_registry_pickle_by_value())
    for name in sorted(want - _ours):
        mod = sys.modules.get(name)
        if mod is not None and name not in registered:
            cloudpickle.register_pickle_by_value(mod)
            _ours.add(name)
    _active = address


def _ask(client: Any, modules: dict[str, str]) -> set[str]:
    """Of ``modules`` (name -> source digest): those the scheduler or a worker lacks (all, if it cannot tell)."""
    out: set[str] = set()
    try:
        out.update(client.run_on_scheduler(unimportable, modules))
        for names in client.run(unimportable, modules).values():
            out.update(names)
    except Exception:  # noqa: BLE001 - cannot ask (cleo_dask missing there...): send them by value
        return set(modules)
    return out


def unimportable(modules: dict[str, str]) -> list[str]:
    """On the scheduler or a worker: those of ``modules`` this process does not import from the same source."""
    import importlib.util
    out = []
    for name, digest in modules.items():
        try:
            mod = sys.modules.get(name)
            path = getattr(mod, "__file__", None) if mod is not None else None
            if path is None:
                spec = importlib.util.find_spec(name)
                path = spec.origin if spec is not None else None
            if not path or _file_digest(os.path.realpath(path)) != digest:
                out.append(name)
        except Exception:  # noqa: BLE001 - not importable here (or its package fails to import)
            out.append(name)
    return out


def refresh() -> None:
    """Take note of cloudpickle's by-value registry (the engine's registrations, or the user's own)."""
    global _registry, _generation
    current = frozenset(cloudpickle.list_registry_pickle_by_value())
    if current != _registry:
        with _lock:
            _registry = current
            _generation += 1


# -- pickling -------------------------------------------------------------------------------------------
def _module_name(obj: Any) -> str | None:
    if isinstance(obj, functools.partial):
        obj = obj.func
    if isinstance(obj, (types.FunctionType, type)):
        return getattr(obj, "__module__", None)
    return type(obj).__module__


def by_value(obj: Any) -> bool:
    """Whether ``obj`` (a function, class, method or instance) is of a module pickled by value."""
    if not _registry or obj is None:
        return False
    if isinstance(obj, types.MethodType):
        return by_value(obj.__func__) or by_value(obj.__self__)
    if isinstance(obj, tuple):
        return any(by_value(o) for o in obj)
    name = _module_name(obj)
    while name:
        if name in _registry:
            return True
        name = name.rpartition(".")[0]
    return False


def blob(obj: Any) -> bytes:
    """``obj`` cloudpickled (functions and classes: once per :func:`generation`)."""
    cacheable = isinstance(obj, (types.FunctionType, type))
    if cacheable:
        entry = _blobs.get(obj)
        if entry is not None and entry[0] == _generation:
            return entry[1]
    data = cloudpickle.dumps(obj)
    if cacheable:
        _blobs[obj] = (_generation, data)
    return data


class _ByValue:
    """Stands in for an object while it is pickled: it unpickles as the object, sent by value."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __reduce__(self):
        return (pickle.loads, (blob(self.obj),))


def portable(obj: Any) -> Any:
    """What to put in a reduce tuple for ``obj``: itself, or a stand-in pickling it by value."""
    return _ByValue(obj) if by_value(obj) else obj


def graph_value(obj: Any, *probes: Any) -> Any:
    """``obj`` as an argument of a Dask task: itself, or (when it or one of ``probes`` is of a module
    pickled by value) an inline task unpickling it on the worker."""
    if not _registry or not (by_value(obj) or any(by_value(p) for p in probes)):
        return obj
    from dask.task_spec import Task
    return Task(None, pickle.loads, cloudpickle.dumps(obj))


def data_node(key: str, out: Any) -> Any:
    """A node output embedded in a graph as data (a ``DataNode``; by value if its value needs it)."""
    from dask.task_spec import DataNode, Task
    value = getattr(out, "value", None)
    probes = [value] + (list(value.values()) if isinstance(value, dict) else [])
    if _registry and any(by_value(p) for p in probes):
        return Task(key, pickle.loads, cloudpickle.dumps(out))
    return DataNode(key, out)


def check_travel(nodes: Iterable[Any]) -> None:
    """Raise :class:`CodeError` naming the node if a task or condition to be sent by value does not
    pickle (a module-level lock, an open connection...): before anything is submitted."""
    if not _registry:
        return
    seen: set[int] = set()
    for node in nodes:
        spec = node.task
        while spec is not None and id(spec) not in seen:
            seen.add(id(spec))
            _try(node.name, f"task {spec.name!r}", spec.fn, spec.__reduce__)
            spec = spec.fallback
        if node.when is not None and id(node.when) not in seen and by_value(node.when):
            seen.add(id(node.when))
            _try(node.name, "its condition", node.when, lambda: blob(node.when))


def _try(node: str, what: str, obj: Any, reduce: Any) -> None:
    try:
        reduce()
    except Exception as exc:  # noqa: BLE001 - any pickling failure is the same user error
        module = _module_name(getattr(obj, "__func__", obj))
        raise CodeError(f"node {node!r}: {what} is sent to the cluster by value (the cluster cannot import "
                        f"module {module!r}) but does not pickle: {type(exc).__name__}: {exc}; {FIX}") from None
