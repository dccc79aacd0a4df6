"""Task specs: what a task is (function and policies), frozen, apart from any run of it.

A task is a plain function ``fn(agent, **parent_results)``, a function decorated with
:func:`task`, or an object with a ``run(agent, **inputs)`` method.  :func:`as_spec` turns any of
them into a :class:`TaskSpec`.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cloudpickle

from cleo_dask.core import shipping as _shipping
from cleo_dask.core.options import TASK_OPTIONS, check_options, check_unknown, convert_options
from cleo_dask.failures.backoff import Backoff
from cleo_dask.errors import WorkflowError


@dataclass(frozen=True)
class Signature:
    """What a task function accepts after the agent: named parameters, and whether ``**inputs``.

    ``order``: the named parameters in the order the function declares them.
    """

    names: frozenset[str]
    required: frozenset[str]
    var_keyword: bool
    takes_agent: bool
    order: tuple[str, ...] = ()

    @classmethod
    def of(cls, fn: Callable[..., Any], agent_first: bool = True) -> Signature:
        """Inspect ``fn``; the first positional parameter receives the agent (if ``agent_first``)."""
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):  # builtins without a signature: accept anything
            return cls(frozenset(), frozenset(), True, True)
        params = list(sig.parameters.values())
        takes_agent = not agent_first
        if not agent_first:
            pass
        elif params and params[0].kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            takes_agent = True
            params = params[1:]
        elif params and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
            takes_agent = True
        order = tuple(p.name for p in params if p.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY))
        required = frozenset(p.name for p in params if p.default is inspect.Parameter.empty and p.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY))
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        return cls(frozenset(order), required, var_kw, takes_agent, order)

    def without(self, name: str) -> Signature:
        """This signature without parameter ``name`` (a fallback's error, passed positionally)."""
        return Signature(self.names - {name}, self.required - {name}, self.var_keyword, self.takes_agent,
                         tuple(n for n in self.ordered() if n != name))

    def ordered(self) -> tuple[str, ...]:
        """The named parameters in declaration order (sorted for a signature pickled without it)."""
        return self.order if len(self.order) == len(self.names) else tuple(sorted(self.names))

    def problems(self, inputs: list[str] | tuple[str, ...], what: str, *, complete: bool = True) -> list[str]:
        """Why a call with the agent and keyword arguments ``inputs`` would fail (empty if fine).

        ``complete=False``: ``inputs`` are the parents' results only, the rest may come from the
        workflow's parameters, so a missing required argument is not a problem yet."""
        out = []
        if not self.takes_agent:
            out.append(f"{what} must take the agent as its first positional parameter")
        if not self.var_keyword:
            for name in inputs:
                if name not in self.names:
                    out.append(f"{what} cannot accept the result of parent {name!r} "
                               f"(add a parameter named {name!r} or **inputs)")
        for name in sorted(self.required) if complete else ():
            if name not in inputs:
                out.append(f"{what} requires argument {name!r}, which no parent provides")
        return out

    def select(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The part of ``inputs`` this signature takes."""
        if self.var_keyword:
            return inputs
        return {k: v for k, v in inputs.items() if k in self.names}


_REDUCING = threading.local()   # ids of the specs being cloudpickled by value in this thread


@dataclass(frozen=True, eq=False)
class TaskSpec:
    """A task: the callable and its policies.  Frozen; runs are recorded apart (:class:`TaskResult`).

    ``retries`` / ``backoff`` left ``None`` take the engine's defaults.  ``duration`` is an
    estimate in seconds used to prioritise the critical path.  The options (the fields after
    ``is_async``) are owned by their policies, listed in :mod:`cleo_dask.core.options`.
    """

    fn: Callable[..., Any]
    name: str
    signature: Signature
    is_async: bool = False
    retries: int | None = None
    backoff: Backoff | None = None
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    timeout: float | None = None
    fallback: TaskSpec | None = None
    on_error: Callable[..., Any] | None = None
    io_bound: bool = False
    rate_limit: str | None = None
    cache: Any = False
    duration: float | None = None
    batch: bool = True

    def __post_init__(self) -> None:
        check_options(self)

    def with_options(self, **options: Any) -> TaskSpec:
        """A copy with some options replaced; unknown option names are a :class:`WorkflowError`."""
        check_unknown(options, self.name)
        return dataclasses.replace(self, **convert_options(options, self.name, as_spec))

    def __call__(self, agent: Any, **inputs: Any) -> Any:
        """Call the task body directly (no Dask), as ``fn(agent, **inputs)``."""
        return self.fn(agent, **self.signature.select(inputs))

    def __reduce__(self):
        # cached: a spec is frozen, and every Dask task of its nodes pickles it again (until the
        # set of modules sent by value changes, see _shipping)
        cached = self.__dict__.get("_reduced")
        generation = _shipping.generation()
        if cached is not None and cached[0] in (generation, None):
            return cached[1]
        fields = tuple(getattr(self, f.name) for f in dataclasses.fields(self))
        reducing = _REDUCING.__dict__.setdefault("ids", set())
        if id(self) not in reducing and _shipping.by_value((self.fn, self.on_error, self.cache) + tuple(self.retry_on)):
            # the user's own code the cluster cannot import: the fields cloudpickled, once, whatever
            # pickler Dask uses for the graph (a recursive task meets itself: plain fields then)
            reducing.add(id(self))
            try:
                reduced: tuple = (_rebuild_shipped, (cloudpickle.dumps(fields),))
            finally:
                reducing.discard(id(self))
        else:
            ref = _decorated_ref(self.fn) if not _shipping.by_value(self.fn) else None
            if ref is not None:
                fields = (_FunctionRef(*ref),) + fields[1:]
            reduced = (_rebuild_spec, fields)
            if id(self) in reducing:
                return reduced
        object.__setattr__(self, "_reduced", (generation, reduced))
        return reduced


class _FunctionRef:
    """Pickles a ``@cd.task``-decorated module function by reference: the module attribute of that
    name is the :class:`Task`, so plain pickle cannot find the function and cloudpickle would copy
    it, with its globals, by value."""

    def __init__(self, module: str, qualname: str):
        self.module, self.qualname = module, qualname

    def resolve(self) -> Callable[..., Any]:
        import importlib
        obj: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        return obj.spec.fn if isinstance(obj, Task) else obj


def _decorated_ref(fn: Any) -> tuple[str, str] | None:
    import sys
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or "<locals>" in qualname or module == "__main__":
        return None
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if isinstance(obj, Task) and obj.spec.fn is fn:
        return module, qualname
    return None


def _rebuild_shipped(blob: bytes) -> TaskSpec:
    spec = _rebuild_spec(*cloudpickle.loads(blob))
    # pickled again (the scheduler, for each worker): the same bytes, whatever this process imports
    object.__setattr__(spec, "_reduced", (None, (_rebuild_shipped, (blob,))))
    return spec


def _rebuild_spec(*fields: Any) -> TaskSpec:
    spec = object.__new__(TaskSpec)
    pairs = fields[0].items() if len(fields) == 1 and isinstance(fields[0], dict) else zip(_SPEC_FIELDS(), fields)
    for f, value in pairs:  # (a dict of fields: pickled by an earlier version)
        if f == "fn" and isinstance(value, _FunctionRef):
            value = value.resolve()
        object.__setattr__(spec, f, value)
    return spec


@functools.lru_cache(maxsize=1)
def _SPEC_FIELDS() -> tuple[str, ...]:  # noqa: N802 - a constant, computed once
    return tuple(f.name for f in dataclasses.fields(TaskSpec))


def _spec_from_callable(fn: Callable[..., Any], name: str | None, options: dict[str, Any]) -> TaskSpec:
    if not callable(fn):
        raise WorkflowError(f"task {name or fn!r} is not callable")
    target = fn
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))
    label = name or getattr(fn, "__name__", None) or type(fn).__name__
    convert_options(options, label, as_spec)
    return TaskSpec(fn=target, name=label, signature=Signature.of(target), is_async=is_async, **options)


class Task:
    """A function made into a task by :func:`task`; call it directly or add it to a workflow."""

    def __init__(self, spec: TaskSpec):
        self.spec = spec
        functools.update_wrapper(self, spec.fn)

    @property
    def name(self) -> str:
        """The task's default node name (the function's name unless given)."""
        return self.spec.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.spec.fn(*args, **kwargs)

    def run(self, agent: Any, **inputs: Any) -> Any:
        """Run the body here, now, as the Cleo docs' ``task.run(agent)``."""
        return self.spec(agent, **inputs)

    def options(self, **options: Any) -> Task:
        """A copy of this task with some options replaced."""
        return Task(self.spec.with_options(**options))

    def __repr__(self) -> str:
        return f"<cleo_dask.Task {self.spec.name}>"

    def __reduce__(self):
        return (Task, (self.spec,))


def task(fn: Callable[..., Any] | None = None, *, name: str | None = None, retries: int | None = None,
         backoff: Backoff | None = None, retry_on: Any = (Exception,), timeout: float | None = None,
         fallback: Any = None, on_error: Callable[..., Any] | None = None, io_bound: bool = False,
         rate_limit: str | None = None, cache: Any = False, duration: float | None = None,
         batch: bool = True) -> Any:
    """Make ``fn(agent, **parent_results)`` a task; use bare (``@cd.task``) or with options.

    ``retries`` extra attempts, ``backoff`` between them (:func:`fixed` / :func:`exponential`),
    only on ``retry_on`` errors; ``timeout`` seconds per attempt; ``fallback(agent, error,
    **inputs)`` runs when the task has finally failed and its result stands in;
    ``on_error(agent, task_name, error)`` is called on the client once per final failure.
    ``batch=False`` keeps the task's nodes out of batches (see :mod:`cleo_dask.core.batching`).
    """
    given = locals()  # the keyword parameters above are the options, named once in core/options.py
    options = {name: given[name] for name in TASK_OPTIONS}

    def wrap(f: Callable[..., Any]) -> Task:
        return Task(_spec_from_callable(f, name, dict(options)))

    return wrap(fn) if fn is not None else wrap


def as_spec(obj: Any) -> TaskSpec:
    """The :class:`TaskSpec` of a task given in any accepted form; :class:`WorkflowError` otherwise."""
    if isinstance(obj, TaskSpec):
        return obj
    if isinstance(obj, Task):
        return obj.spec
    if obj is None:
        raise WorkflowError("a task is required, got None")
    run = getattr(obj, "run", None)
    if not inspect.isroutine(obj) and not inspect.isclass(obj) and callable(run):
        name = getattr(obj, "name", None)
        return _spec_from_callable(run, name if isinstance(name, str) else type(obj).__name__, {})
    if callable(obj) and not inspect.isclass(obj):
        return _spec_from_callable(obj, None, {})
    raise WorkflowError(f"{obj!r} is not a task: expected a function, a @cd.task, or an object with run(agent, **inputs)")
