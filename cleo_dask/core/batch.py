"""What runs on the workers for a *batch unit*: many independent nodes in one Dask task.

Every node of a batch runs as if alone: its own trigger rule and ``when``, its attempts and
retries (its :class:`~cleo_dask.failures.retry.RetryPolicy`: ``retry_on``, a backoff, a
``Retry(delay=...)``), a time limit per attempt, its fallback run inline after the final failure,
its cache.  A node whose retry waits is parked while the batch's other nodes run; the batch then
waits for it outside the worker's thread pool (:mod:`cleo_dask.core.poolwait`: no slot held) and
takes a slot again for the attempt.  Its siblings' children wait for the whole batch meanwhile.
A failing node never raises out of the batch: its output is the ``failed`` (or ``fell_back``)
:class:`NodeOutput`, every attempt published as an ``attempt`` event, so its siblings are
unaffected and its children apply their trigger rules on the workers.
Each final failure is published as an ``outcome`` event (``batch: true``) so that the client
calls ``on_error`` and applies ``fail_fast`` (:mod:`cleo_dask.runs.batchevents`); with
``fail_fast`` the batch then errs once all its nodes ran, so that nothing below it starts.

The Dask task's output is the tuple of the nodes' outputs, indexed like a fused chain's.  A batch
of sync nodes runs them one after another in its worker thread (:func:`run_batch`); a batch with
``async`` nodes (:func:`run_batch_async`) runs them concurrently on the worker's event loop, its
sync nodes meanwhile one after another in a thread.
"""
from __future__ import annotations

import asyncio
import heapq
import pickle
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import cloudpickle

from cleo_dask.admission.io import release_slot
from cleo_dask.core.events import event, send_from_worker
from cleo_dask.core.nodeoutput import NodeOutput
from cleo_dask.core.outputs import Outputs
from cleo_dask.core.outputstore import OutputStore
from cleo_dask.core.poolwait import PoolWait
from cleo_dask.core.shipping import portable
from cleo_dask.core.worker import (FELL_BACK, SKIPPED, NodeCall, NodeFailed, cache_lookup, cache_store, call_args, failure_output,
                                   finish_output, gather_inputs, prepare_node, record_failure, skip_output,
                                   when_holds, worker_address)
from cleo_dask.failures.decide import DecisionKind, FailedAttempt, decide
from cleo_dask.failures.retry import RetryPolicy
from cleo_dask.failures.timeout import await_with_timeout, call_with_timeout

_NO_RETRY = RetryPolicy()   # the final decision only: retries are counted here, before it


@dataclass(slots=True, eq=False)
class BatchCall:
    """A batch unit of one run: its nodes (none depends on another), each node's retry policy
    (engine defaults filled in), the run's ``fail_fast`` and, for durable runs, the store."""

    run_id: str
    key: str
    nodes: tuple[NodeCall, ...]
    policies: tuple[RetryPolicy, ...]
    store: OutputStore | None = None
    fail_fast: bool = False

    def __reduce__(self):
        # pickled once, here, into bytes the scheduler only stores and forwards: unpickling a
        # thousand NodeCalls on the scheduler (and pickling them again for a worker) cost it more
        # than the batch costs its worker; the worker unpacks it in its task's thread
        nodes = self.nodes
        if all(c.attempt == 1 and c.mode == "task" for c in nodes):   # as compiled: by columns
            nodes = (tuple([c.name for c in nodes]), tuple([c.task for c in nodes]), tuple([c.inputs for c in nodes]),
                     tuple([None if c.when is None else portable(c.when) for c in nodes]),
                     tuple([c.trigger for c in nodes]))
        return (PackedBatch, (pack((self.run_id, self.key, nodes, self.policies, self.store, self.fail_fast)),))


class PackedBatch:
    """A :class:`BatchCall` as it travels: its pickle, unpacked where the batch runs."""

    __slots__ = ("blob",)

    def __init__(self, blob: bytes):
        self.blob = blob

    def __reduce__(self):
        return (PackedBatch, (self.blob,))

    def unpack(self) -> BatchCall:
        """The batch itself."""
        run_id, key, nodes, *rest = pickle.loads(self.blob)
        if nodes and type(nodes[0]) is tuple:   # by columns
            nodes = tuple(map(NodeCall, *nodes))
        return BatchCall(run_id, key, nodes, *rest)


def pack(obj: Any) -> bytes:
    """``obj`` pickled as Dask pickles a graph: plain pickle, cloudpickle when that fails or when
    the plain pickle names ``__main__`` (a script's own functions and classes: by reference they
    would not load on a worker, whose ``__main__`` is ``dask worker``'s)."""
    try:
        out = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - e.g. a lambda's `when`: cloudpickle takes it by value
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL) if b"__main__" in out else out


def _unpacked(batch: BatchCall | PackedBatch) -> BatchCall:
    return batch.unpack() if type(batch) is PackedBatch else batch


def _again(call: NodeCall, attempt: int, mode: str = "task", error: BaseException | None = None) -> NodeCall:
    task = call.task.fallback if mode == "fallback" and call.mode == "task" else call.task
    return NodeCall(call.name, task, call.inputs, call.when, call.trigger, attempt, mode, error)


def _publish_outcome(batch: BatchCall, call: NodeCall, status: str, error: BaseException | None, text: str,
                     notify: bool) -> None:
    try:
        pickled = cloudpickle.dumps(error)
    except Exception:  # noqa: BLE001 - record_failure already made it picklable; be safe anyway
        pickled = b""
    send_from_worker(event("outcome", batch.run_id, node=call.name, key=batch.key, status=status,
                           error=repr(error)[:500], error_type=type(error).__name__, notify=notify,
                           pickled=pickled, traceback=text[-20000:], batch=True))


def node_steps(batch: BatchCall, index: int, agent: Any, deps: tuple, worker: str | None,
               finals: dict[int, tuple] | None = None) -> Generator[tuple, Any, NodeOutput]:
    """One node of ``batch`` run as if alone (see the module docstring); never raises.
    ``finals``: where its final failure is noted (``index -> (attempt, error, traceback)``).

    Yields what its driver must do — ``("body", call, args, kwargs)``, ``("io", fn, args)``,
    ``("sleep", seconds)`` — and is sent the result or thrown the exception; returns the output."""
    call = batch.nodes[index]
    policy = batch.policies[index]
    parents = gather_inputs(call, deps, [])
    failed = 0   # failed attempts of the task itself
    while True:
        start = time.time()
        try:
            skip, kwargs, upstream = prepare_node(call, parents)
            if skip is None and call.mode == "task" and not when_holds(call, kwargs):
                skip = (SKIPPED, "condition 'when' is false")
            if skip is not None:
                out = skip_output(call, batch.key, skip, worker, upstream, batch.run_id)
            else:
                args, kw = call_args(call, agent, kwargs)
                ckey, hit = cache_lookup(batch, call, args, kw)
                value = hit[0] if hit is not None else (yield ("body", call, args, kw))
                out = finish_output(call, value, start, worker, upstream)
                cache_store(batch, call, ckey, hit, value, out)
            if batch.store is not None:
                yield ("io", batch.store.save_output, (batch.run_id, batch.key, call.name, out))
            return out
        except Exception as exc:  # noqa: BLE001 - every task error is this node's failed attempt
            attempt, error, text = record_failure(call, batch.key, start, worker, exc, batch.run_id)
            if call.mode == "task":
                failed += 1
                if policy.should_retry(exc, failed):
                    delay = policy.delay(exc, failed)
                    if delay > 0:
                        yield ("sleep", delay)
                    call = _again(call, failed + 1)
                    continue
            spec = batch.nodes[index].task
            decision = decide(FailedAttempt(error, failed, fallback=call.mode == "fallback"), _NO_RETRY,
                              has_fallback=spec.fallback is not None, has_on_error=spec.on_error is not None,
                              fail_fast=batch.fail_fast)
            fall_back = decision.kind is DecisionKind.FALLBACK
            _publish_outcome(batch, call, FELL_BACK if fall_back else "failed", error, text, decision.notify)
            if fall_back:
                call = _again(call, failed + 1, "fallback", error)
                continue
            out = failure_output(call.name, error, text)
            out.worker = worker
            if finals is not None:
                finals[index] = (attempt, error, text)
            return out


def _drive_sync(steps: Generator[tuple, Any, NodeOutput]) -> tuple[bool, Any]:
    """Run one node's steps in this thread until it ends, ``(True, output)``, or asks to wait
    before a retry, ``(False, seconds)``: the caller parks it and resumes it later (``None`` sent)."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            request = steps.throw(error) if error is not None else steps.send(reply)
        except StopIteration as done:
            return True, done.value
        reply, error = None, None
        if request[0] == "sleep":
            return False, request[1]
        try:
            if request[0] == "body":
                _, call, args, kw = request
                if call.task.is_async:
                    reply = asyncio.run(await_with_timeout(call.task.fn(*args, **kw), call.task.timeout))
                else:
                    reply = call_with_timeout(call.task.fn, args, kw, call.task.timeout)
            else:
                reply = request[1](*request[2])
        except Exception as exc:  # noqa: BLE001 - handed back to the node, which records it
            error = exc


def _run_sync_nodes(batch: BatchCall, indices: list[int], agent: Any, deps: tuple, worker: str | None,
                    finals: dict[int, tuple], outputs: list[Any], pool: bool = True) -> None:
    """Run the sync nodes ``indices`` of ``batch`` one after another into ``outputs``.  A node
    whose attempt failed and retries after a delay is parked while the others run; the batch then
    waits for the earliest retry outside the worker's pool (:class:`PoolWait`, ``pool``: this is a
    pool thread) and takes a slot again to run it.  A wait cut short (the run was cancelled) ends
    the batch with an error: nobody reads its outputs."""
    parked: list[tuple[float, int, Generator[tuple, Any, NodeOutput]]] = []
    for i in indices:
        steps = node_steps(batch, i, agent, deps, worker, finals)
        done, got = _drive_sync(steps)
        if done:
            outputs[i] = got
        else:
            heapq.heappush(parked, (time.monotonic() + got, i, steps))
    if not parked:
        return
    waits = PoolWait(batch.key, pool=pool)
    while parked:
        due, i, steps = heapq.heappop(parked)
        if not waits.sleep_until(due):
            raise RuntimeError(f"batch {batch.key!r} stopped waiting for a retry: its run was cancelled")
        waits.take_slot()
        done, got = _drive_sync(steps)
        if done:
            outputs[i] = got
        else:
            heapq.heappush(parked, (time.monotonic() + got, i, steps))


async def _drive_async(steps: Generator[tuple, Any, NodeOutput]) -> NodeOutput:
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            request = steps.throw(error) if error is not None else steps.send(reply)
        except StopIteration as done:
            return done.value
        reply, error = None, None
        try:
            if request[0] == "body":
                _, call, args, kw = request
                reply = await await_with_timeout(call.task.fn(*args, **kw), call.task.timeout)
            elif request[0] == "io":
                reply = await asyncio.to_thread(request[1], *request[2])
            else:
                await asyncio.sleep(request[1])
        except Exception as exc:  # noqa: BLE001
            error = exc


def _fail_fast(batch: BatchCall, outputs: tuple[NodeOutput, ...], finals: dict[int, tuple]) -> tuple[NodeOutput, ...]:
    """With ``fail_fast``, a batch in which a node finally failed errs once all its nodes ran,
    so that nothing below it starts (as below a node run alone); every node's output travels
    in the error (:class:`NodeFailed` ``completed``)."""
    if not batch.fail_fast or not finals:
        return outputs
    i = min(finals)
    attempt, error, text = finals[i]
    name = batch.nodes[i].name
    completed = {c.name: out for c, out in zip(batch.nodes, outputs)}
    raise NodeFailed(name, batch.key, attempt, error, text, completed)


def run_batch(batch: BatchCall | PackedBatch, agent: Any, *deps: Any) -> tuple[NodeOutput, ...]:
    """Run a batch of sync nodes one after another; the Dask task function of such batches."""
    batch = _unpacked(batch)
    finals: dict[int, tuple] = {}
    outputs: list[Any] = [None] * len(batch.nodes)
    _run_sync_nodes(batch, list(range(len(batch.nodes))), agent, deps, worker_address(), finals, outputs)
    return _fail_fast(batch, Outputs(outputs), finals)


async def run_batch_async(batch: BatchCall | PackedBatch, agent: Any, *deps: Any) -> tuple[NodeOutput, ...]:
    """Run a batch holding ``async`` nodes: those concurrently on the worker's event loop, the sync
    ones meanwhile one after another in a thread.  A batch of ``async`` nodes only frees its
    worker slot while it waits, as an ``async`` unit does; one with sync nodes keeps it for them."""
    batch = _unpacked(batch)
    worker = worker_address()
    asyncs = [i for i, c in enumerate(batch.nodes) if c.task.is_async]
    syncs = [i for i, c in enumerate(batch.nodes) if not c.task.is_async]
    if not syncs:
        release_slot(batch.key)

    finals: dict[int, tuple] = {}

    def run_syncs() -> list[NodeOutput]:   # (not a pool thread: its waits only sleep)
        mine: list[Any] = [None] * len(batch.nodes)
        _run_sync_nodes(batch, syncs, agent, deps, worker, finals, mine, pool=False)
        return [mine[i] for i in syncs]

    parts = [_drive_async(node_steps(batch, i, agent, deps, worker, finals)) for i in asyncs]
    if syncs:
        parts.append(asyncio.to_thread(run_syncs))
    done = await asyncio.gather(*parts)
    outputs: list[Any] = [None] * len(batch.nodes)
    for i, out in zip(asyncs, done):
        outputs[i] = out
    for i, out in zip(syncs, done[len(asyncs)] if syncs else ()):
        outputs[i] = out
    return _fail_fast(batch, Outputs(outputs), finals)
