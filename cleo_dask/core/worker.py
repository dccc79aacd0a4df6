"""What runs on the workers: one Dask task runs a *unit*, a linear run of one or more nodes.

Each node's output is kept in Dask memory as a :class:`NodeOutput` (value plus a small record);
children unwrap it.  A node that fails raises :class:`NodeFailed`, so Dask marks the key erred
(and applies its own ``retries=``); the engine on the client decides what follows (the fallback,
the trigger rules of the children).  A retry that waits is handed back to the scheduler, which
holds the key meanwhile (:mod:`cleo_dask.core.heldretry`).  Nothing here waits for a retry.
"""
from __future__ import annotations

import asyncio
import time
import traceback as tb
from dataclasses import dataclass
from collections.abc import Generator
from typing import Any

import cloudpickle

from distributed import Reschedule

from cleo_dask.core.current import enter_node, leave_node
from cleo_dask.core.events import event, send_from_worker
from cleo_dask.core.heldretry import hold_or_final
from cleo_dask.core.mapping import Gathered, element
from cleo_dask.admission.io import release_slot, run_blocking
from cleo_dask.core.nodeoutput import NodeOutput
from cleo_dask.core.outputs import Outputs
from cleo_dask.core.outcome import SKIP_STATUSES, Attempt, Failure
from cleo_dask.core.outputstore import OutputStore
from cleo_dask.core.shipping import portable
from cleo_dask.core.task import TaskSpec
from cleo_dask.failures.timeout import await_with_timeout, call_with_timeout
from cleo_dask.failures.rules import ALL_SUCCESS, skip_decision

SUCCEEDED, FELL_BACK, SKIPPED, FAILED = "succeeded", "fell_back", "skipped", "failed"
UPSTREAM_FAILED = "upstream_failed"


class NodeFailed(Exception):
    """Raised on a worker when a node's attempt fails; carries the record and the earlier outputs
    of its unit (the nodes before it in a fused linear run, which did succeed); ``previous``: the
    node's earlier failed attempts, retried while the scheduler held its key."""

    def __init__(self, node: str, key: str, attempt: Attempt, error: BaseException | None,
                 traceback: str, completed: dict[str, NodeOutput] | None = None, previous: tuple[Attempt, ...] = ()):
        super().__init__(f"node {node!r} failed: {attempt.error}")
        self.node = node
        self.key = key
        self.attempt = attempt
        self.error = error
        self.traceback = traceback
        self.completed = completed or {}
        self.previous = previous

    def __reduce__(self):
        return (NodeFailed, (self.node, self.key, self.attempt, self.error, self.traceback, self.completed,
                             self.previous))


@dataclass(slots=True, eq=False)  # not frozen: a million of them are made per compile
class NodeCall:
    """How to run one node inside a unit: its spec, and where each parent's output comes from.

    ``inputs``: ``(parent name, dependency position, index)`` triples; position ``-1`` means an
    earlier node of the same unit (``index`` into the unit), otherwise the ``position``-th
    dependency of the Dask task (``index`` into a multi-node unit's outputs, ``-1`` for a single).
    ``mode`` is ``"task"`` or ``"fallback"`` (then ``error`` is the final failure).
    """

    name: str
    task: TaskSpec
    inputs: tuple[tuple[str, int, int], ...]
    when: Any = None
    trigger: str = ALL_SUCCESS
    attempt: int = 1
    mode: str = "task"
    error: BaseException | None = None

    def __reduce__(self):
        # a positional tuple: every Dask task carries one per node, pickled by the scheduler
        # for each worker; the default (class + field-name dict) is larger and slower
        return (NodeCall, (self.name, self.task, self.inputs, portable(self.when), self.trigger, self.attempt,
                           self.mode, portable(self.error)))


@dataclass(slots=True, eq=False)  # not frozen: a million of them are made per compile
class UnitCall:
    """A Dask task's worth of nodes (a linear run), for one run of a workflow."""

    run_id: str
    key: str
    nodes: tuple[NodeCall, ...]
    store: OutputStore | None = None  # durable runs: where outputs are written (and cache= values)

    def __reduce__(self):
        return (UnitCall, (self.run_id, self.key, self.nodes, self.store))


def worker_address() -> str | None:
    """The address of the worker running this task (``None`` outside a worker)."""
    try:
        from distributed import get_worker
        return get_worker().address
    except Exception:  # noqa: BLE001 - outside a worker (tests, local calls)
        return None


def gather_inputs(call: NodeCall, deps: tuple, local: list[NodeOutput]) -> list[tuple[str, NodeOutput]]:
    """``(parent, output)`` of each input of ``call``: from the Dask task's ``deps`` or the unit's earlier ``local`` outputs."""
    out = []
    for parent, pos, idx in call.inputs:
        if pos < 0:
            out.append((parent, local[idx]))
        else:
            dep = deps[pos]
            out.append((parent, dep if idx < 0 else dep[idx]))
        if type(parent) is tuple:   # an item of a mapped node: (argument, element index)
            out[-1] = (parent[0], element(out[-1][1], parent[1]))
    return out


def prepare_node(call: NodeCall, parents: list[tuple[str, NodeOutput]]):
    """Decide skip or run; returns ((skip status, reason) or None, kwargs, upstream fallbacks)."""
    upstream: tuple[str, ...] = ()
    given: dict[str, Any] = {}
    if parents and parents[-1][0] == "**":  # the run's inputs (workflow parameters' values)
        given = dict(parents[-1][1].value)
        parents = parents[:-1]
        if parents:  # below the roots, a node gets the parameters it names (its parents' results aside)
            names = call.task.signature.names
            given = {k: v for k, v in given.items() if k in names}
    for name, out in parents:
        if out.upstream_fallbacks or out.status == FELL_BACK:
            upstream = tuple(dict.fromkeys(upstream + out.upstream_fallbacks + ((name,) if out.status == FELL_BACK else ())))
    if call.mode == "fallback":
        return None, {**given, **{n: o.value for n, o in parents}}, upstream
    skip = skip_decision(call.trigger, [(n, o.status, o.reason) for n, o in parents]) if parents else None
    if skip is not None:
        return skip, {}, upstream
    kwargs = {n: (o.value if o.status not in SKIP_STATUSES else None) for n, o in parents}
    return None, {**given, **kwargs} if given else kwargs, upstream


def when_holds(call: NodeCall, kwargs: dict[str, Any]) -> bool:
    """Whether the node's ``when`` condition (if any) holds for these inputs."""
    if call.when is None:
        return True
    from cleo_dask.core.task import Signature
    return bool(call.when(**Signature.of(call.when, agent_first=False).select(kwargs)))


def record_failure(call: NodeCall, key: str, start: float, worker: str | None, exc: BaseException,
                   run_id: str) -> tuple[Attempt, BaseException | None, str]:
    """A failed attempt of ``call``: publish its ``attempt`` event; return its record, the error
    (as text in a ``RuntimeError`` if it does not pickle) and its traceback."""
    from cleo_dask.errors import TaskTimeout
    end = time.time()
    attempt = Attempt(call.attempt, start, end, worker, repr(exc), type(exc).__name__,
                      timed_out=isinstance(exc, TaskTimeout), kind=call.mode)
    text = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
    try:
        cloudpickle.dumps(exc)
        error: BaseException | None = exc
    except Exception:  # noqa: BLE001 - an exception that does not pickle travels as text
        error = RuntimeError(f"{type(exc).__name__}: {exc}")
    send_from_worker(event("attempt", run_id, node=call.name, key=key, attempt=call.attempt, worker=worker, start=start,
               end=end, error=repr(exc)[:500], error_type=type(exc).__name__, timed_out=attempt.timed_out,
               mode=call.mode))
    return attempt, error, text


def _failed(call: NodeCall, key: str, start: float, worker: str | None, exc: BaseException,
            completed: dict[str, NodeOutput], run_id: str) -> NodeFailed:
    attempt, error, text = record_failure(call, key, start, worker, exc, run_id)
    return NodeFailed(call.name, key, attempt, error, text, dict(completed))


def finish_output(call: NodeCall, value: Any, start: float, worker: str | None, upstream: tuple[str, ...]) -> NodeOutput:
    """The output of a finished attempt of ``call`` (its task, or its fallback)."""
    status = FELL_BACK if call.mode == "fallback" else SUCCEEDED
    if type(value) is Gathered:   # a mapped node's gather: failed if an item failed (core/mapping.py)
        value, status = value.items, (FAILED if value.failed else status)
    return NodeOutput(value, status, start, time.time(), worker, call.attempt, None, upstream)


def skip_output(call: NodeCall, key: str, skip: tuple[str, str], worker: str | None, upstream: tuple[str, ...],
          run_id: str) -> NodeOutput:
    """The output of a node that does not run (``skip``: its status and reason); publishes ``skipped``."""
    status, reason = skip
    now = time.time()
    send_from_worker(event("skipped", run_id, node=call.name, key=key, reason=reason, status=status))
    return NodeOutput(None, status, now, now, worker, call.attempt, reason, upstream)


def call_args(call: NodeCall, agent: Any, kwargs: dict[str, Any]) -> tuple[tuple, dict]:
    """The positional and keyword arguments of the body of ``call``."""
    kw = call.task.signature.select(kwargs)
    if call.mode == "fallback":
        return (agent, call.error), kw
    return (agent,), kw


def cache_lookup(unit: UnitCall, call: NodeCall, args: tuple, kw: dict[str, Any]):
    """Durable runs only: the cache key of a ``cache=`` task's call and ``(value,)`` on a hit."""
    if unit.store is None or not call.task.cache:
        return None, None
    key = unit.store.cache_key(call, args, kw, unit.run_id)
    return key, (unit.store.cache_get(key, call.name, unit.run_id) if key else None)


def cache_store(unit: UnitCall, call: NodeCall, key: str | None, hit: Any, value: Any, out: NodeOutput) -> None:
    """Durable runs only: note a cache hit on ``out``, or store a fresh ``value`` under ``key``."""
    if hit is not None:
        out.reason = "cache hit"
    elif key is not None:
        unit.store.cache_put(key, value, call.name, unit.run_id)


def _unit_steps(unit: UnitCall, agent: Any, deps: tuple, worker: str | None) -> Generator[tuple, Any, Any]:
    """The loop over a unit's nodes, shared by the sync and the async Dask task.

    It yields what its driver must run — ``("body", call, args, kwargs)`` for a task body,
    ``("io", fn, args)`` for blocking I/O — and is sent the result or thrown the exception; it
    returns the unit's output.  Each driver only decides *how* to run those (in this thread, or
    awaited on the worker's event loop).
    """
    outputs: list[NodeOutput] = []
    completed: dict[str, NodeOutput] = {}
    for call in unit.nodes:
        start = time.time()
        try:
            skip, kwargs, upstream = prepare_node(call, gather_inputs(call, deps, outputs))
            if skip is None and not when_holds(call, kwargs):
                skip = (SKIPPED, "condition 'when' is false")
            if skip is not None:
                out = skip_output(call, unit.key, skip, worker, upstream, unit.run_id)
            else:
                args, kw = call_args(call, agent, kwargs)
                ckey, hit = cache_lookup(unit, call, args, kw)
                if hit is not None:
                    value = hit[0]
                else:   # the body may ask which run and node it belongs to (signals, cd.spawn)
                    token = enter_node(unit.run_id, call.name, unit.key, agent, unit.store)
                    try:
                        value = yield ("body", call, args, kw)
                    finally:
                        leave_node(token)
                out = finish_output(call, value, start, worker, upstream)
                cache_store(unit, call, ckey, hit, value, out)
            if unit.store is not None:
                yield ("io", unit.store.save_output, (unit.run_id, unit.key, call.name, out))
        except Exception as exc:  # noqa: BLE001 - every task error becomes a NodeFailed
            failed = _failed(call, unit.key, start, worker, exc, completed, unit.run_id)
            if call.mode == "task" and len(unit.nodes) == 1:
                held, failed.previous = hold_or_final(unit.key, failed.attempt, exc, unit.run_id, call.name)
                if held:
                    raise Reschedule() from None   # the scheduler holds the key for the delay
            raise failed from None
        outputs.append(out)
        completed[call.name] = out
    return outputs[0] if len(outputs) == 1 else Outputs(outputs)


def _next_step(steps: Generator[tuple, Any, Any], reply: Any, error: BaseException | None) -> tuple[bool, Any]:
    """Send ``reply`` (or throw ``error``) into the steps: ``(False, request)``, or ``(True, output)``."""
    try:
        return False, (steps.throw(error) if error is not None else steps.send(reply))
    except StopIteration as done:
        return True, done.value


def run_unit(unit: UnitCall, agent: Any, *deps: Any) -> Any:
    """Run a unit of synchronous nodes; the Dask task function of every sync unit."""
    steps = _unit_steps(unit, agent, deps, worker_address())
    reply: Any = None
    error: BaseException | None = None
    while True:
        finished, request = _next_step(steps, reply, error)
        if finished:
            return request
        reply, error = None, None
        try:
            if request[0] == "io":
                reply = request[1](*request[2])
                continue
            _, call, args, kw = request
            if call.task.is_async:
                reply = asyncio.run(await_with_timeout(call.task.fn(*args, **kw), call.task.timeout))
            else:
                reply = call_with_timeout(call.task.fn, args, kw, call.task.timeout)
        except Exception as exc:  # noqa: BLE001 - handed back to the loop, which records it
            error = exc


async def run_unit_async(unit: UnitCall, agent: Any, *deps: Any) -> Any:
    """Run a unit of ``async`` nodes on the worker's event loop (Dask awaits coroutine tasks).

    Also the Dask task of ``io_bound`` sync units (their bodies run in cleo's I/O thread pool).
    Either way the unit first frees its worker slot (:func:`cleo_dask.admission.io.release_slot`).
    """
    worker = worker_address()
    release_slot(unit.key)
    steps = _unit_steps(unit, agent, deps, worker)
    reply: Any = None
    error: BaseException | None = None
    while True:
        finished, request = _next_step(steps, reply, error)
        if finished:
            return request
        reply, error = None, None
        try:
            if request[0] == "io":   # file I/O off the worker's event loop
                reply = await asyncio.to_thread(request[1], *request[2])
                continue
            _, call, args, kw = request
            if call.task.is_async:
                reply = await await_with_timeout(call.task.fn(*args, **kw), call.task.timeout)
            else:  # a blocking io_bound body
                reply = await run_blocking(call.task.fn, args, kw, call.task.timeout)
        except Exception as exc:  # noqa: BLE001
            error = exc


def failure_output(node: str, error: BaseException | None, traceback: str | None) -> NodeOutput:
    """The stand-in output of a finally failed node (no fallback): children see a :class:`Failure`."""
    now = time.time()
    return NodeOutput(Failure(node, error, traceback), FAILED, now, now, None, 0, "failed")


def skipped_output(reason: str, status: str = SKIPPED) -> NodeOutput:
    """The output of a node the client decided not to run (its trigger rule said no):
    ``skipped``, or ``upstream_failed`` below a failure."""
    now = time.time()
    return NodeOutput(None, status, now, now, None, 0, reason)


def collect_meta(keys: list[str], dask_worker: Any = None) -> dict[str, Any]:
    """On a worker (``Client.run``): the records of the given keys it holds, without the values."""
    data = dask_worker.data
    out: dict[str, Any] = {}
    for k in keys:
        if k in data:
            v = data[k]
            out[k] = v.meta() if isinstance(v, NodeOutput) else tuple(o.meta() for o in v)
    return out
