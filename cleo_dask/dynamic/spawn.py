"""``cd.spawn``: a child run of the running task's agent, started from inside the task.

The child is an ordinary run (validation, retries, fallbacks, journal, dashboard, progress) sent
through the ordinary submit path: an :class:`~cleo_dask.engine.Engine` on the worker's own client
(``distributed.get_client()``; one per worker process, see :func:`worker_engine`) submits it, and
that engine's driver thread drives it.  The parent task waits holding nothing:

* ``await child`` (async tasks) polls the child on the worker's event loop;
* ``child.result()`` (sync tasks) secedes from the worker's thread pool while it waits
  (``distributed.secede`` / ``rejoin``), so the slot runs other tasks (the child's among them).

Each child records its parent (:attr:`ChildRun.parent`: run id and node) and its depth; the depth
is kept in the scheduler's task metadata (``["cleo-spawn", run_id]``) so a grandchild spawned on
another worker knows it.  A durable parent (``store=``) keeps each child that succeeded in its
result store (:class:`KeptChild`), so a resumed parent does not run it again.  Deeper than ``cleo_dask.dynamic.max-spawn-depth`` is a
:class:`CleoError`.  A parent task cancelled while it waits (its run cancelled) cancels the child.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

from cleo_dask import config as _config
from cleo_dask.core.current import CurrentNode, current_node
from cleo_dask.core.outcome import TaskResult
from cleo_dask.dynamic import secededidle
from cleo_dask.dynamic.childfetch import OutcomeFetcher
from cleo_dask.dynamic.childsend import Endings, SpawnQueue
from cleo_dask.dynamic.quietwait import unprofiled
from cleo_dask.errors import CleoError

METADATA = "cleo-spawn"
_engines: dict[str, Any] = {}
_engines_lock = threading.Lock()
_by_worker: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # worker -> its engine (asked once)
_endings: dict[int, Endings] = {}   # id(engine) -> its runs' endings
_depths: dict[str, int] = {}     # run id -> spawn depth, for runs spawned by this process
_pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="cleo-spawn")   # async tasks' submissions


def worker_engine(worker: Any = None) -> Any:
    """The engine of this worker process's client (made once per client; never closed by cleo);
    ``worker``: the worker running the calling task (default: the one of this thread)."""
    from distributed import get_worker
    worker = worker or get_worker()
    engine = _by_worker.get(worker)
    # Worker._get_client logs an event on the scheduler at each call: asked once per worker, not per spawn
    if engine is not None and not engine.closed and engine.client.status == "running":
        return engine
    client = worker._get_client()   # what distributed.get_client() does in a task
    ident = f"{client.id}"
    with _engines_lock:
        engine = _engines.get(ident)
        if engine is None or engine.closed:
            from cleo_dask.engine import Engine
            engine = _engines[ident] = Engine(client=client)
            _endings[id(engine)] = Endings(engine)
        _by_worker[worker] = engine
        return engine


def _endings_of(worker: Any) -> Endings:
    """The :class:`Endings` of ``worker``'s engine."""
    return _endings[id(worker_engine(worker))]


def worker_engines() -> list[Any]:
    """The engines this process made for its workers' children (their runs: ``engine.runs_in_memory``)."""
    with _engines_lock:
        return list(_engines.values())


def depth_of(client: Any, run_id: str) -> int:
    """How deep run ``run_id`` is among spawned runs (0: submitted by a user)."""
    depth = _depths.get(run_id)
    if depth is None:   # asked once per run and process: a parent spawning many children asks once
        box = client.get_metadata([METADATA, run_id], default=None)
        depth = _depths[run_id] = int(box["depth"]) if box else 0
    return depth


def _check_depth(depth: int) -> None:
    limit = int(_config.get("dynamic.max-spawn-depth", 10))
    if depth > limit:
        raise CleoError(f"cd.spawn: a child run at depth {depth} exceeds cleo_dask.dynamic.max-spawn-depth={limit} "
                        "(runs spawning runs without end?)")


class ChildRun:
    """A child run spawned by :func:`spawn`: ``await child`` or ``child.result()``.

    The outcome is the child's :class:`~cleo_dask.RunOutcome`, or, for a single task spawned
    (not a workflow), that task's :class:`~cleo_dask.TaskResult`."""

    def __init__(self, submitted: concurrent.futures.Future | None, parent: CurrentNode, single: bool,
                 kept: KeptChild | None = None, worker: Any = None,
                 outcome: concurrent.futures.Future | None = None):
        self._submitted = submitted
        self._outcome_future = outcome   # filled as soon as the child ends (queued spawns)
        self.parent = (parent.run_id, parent.node)
        self._parent_key = parent.key
        self._single = single
        self._kept = kept
        self._worker = worker

    @property
    def run(self) -> Any:
        """The child :class:`~cleo_dask.Run` (waits for its submission; ``None``: a child a resumed
        durable parent kept from before, not run again)."""
        return None if self._submitted is None else self._submitted.result()

    @property
    def id(self) -> str:
        """The child run's id."""
        return self.run.id

    def _outcome(self, run: Any) -> Any:
        return _outcome_of(run, self._single, self._kept)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the child (a sync task's worker slot is released meanwhile) and return its outcome."""
        from distributed import rejoin, secede
        if self._kept is not None and self._kept.outcome is not None:
            return self._kept.outcome
        seceded = _in_worker_thread()
        if seceded:
            secededidle.ensure(worker_engine(self._worker).client)   # a worker waiting only counts as idle
            secede()
        try:
            run = self._submitted.result(timeout)
            end = None if timeout is None else time.monotonic() + timeout
            ending = _endings_of(self._worker).watch(run)   # its finished notice: no client call per look
            with unprofiled(self._worker) if seceded else contextlib.nullcontext():
                while not _ended(ending, 0.2):
                    if _cancelled(self._worker, self._parent_key):
                        run.cancel()
                        break
                    if end is not None and time.monotonic() > end:
                        raise TimeoutError(f"child run {run.id} not done after {timeout:g} s")
            return self._outcome(run)
        finally:
            if seceded:
                rejoin()

    def __await__(self):
        return self._wait().__await__()

    async def _wait(self) -> Any:
        if self._kept is not None and self._kept.outcome is not None:
            return self._kept.outcome
        # the run's methods use the worker's client synchronously: never on the worker's event loop
        run = await asyncio.wrap_future(self._submitted)
        if self._outcome_future is not None:
            ended = asyncio.wrap_future(self._outcome_future)
        else:
            ended = asyncio.wrap_future(_pool.submit(self._outcome, run))
        try:
            while True:
                done, _ = await asyncio.wait([ended], timeout=0.2)
                if done:
                    break
                if _cancelled(self._worker, self._parent_key):   # Dask lets a cancelled coroutine task run on
                    _pool.submit(run.cancel)
                    break
        except asyncio.CancelledError:   # the parent task was cancelled (its run cancelled): so is the child
            _pool.submit(run.cancel)
            raise
        return await ended

    def cancel(self) -> None:
        """Cancel the child run."""
        if self.run is not None:
            self.run.cancel()


class KeptChild:
    """A durable parent's child, kept in the parent run's result store once it succeeded (as a
    ``cache=`` value): a resumed parent gets it back instead of running it again.  Children are
    told apart by their order among the spawns of one execution of the node's body."""

    _seq: dict[tuple[str, str], int] = {}

    def __init__(self, parent: CurrentNode):
        n = self._seq[(parent.key, parent.node)] = self._seq.get((parent.key, parent.node), -1) + 1
        self.store, self.parent = parent.store, parent
        self.key = hashlib.sha256(f"cleo-spawn\0{parent.run_id}\0{parent.node}\0{n}".encode()).hexdigest()
        hit = self.store.cache_get(self.key, parent.node, parent.run_id)
        self.outcome = hit[0] if hit is not None else None

    def keep(self, outcome: Any) -> None:
        """Keep ``outcome`` (a TaskResult, or a mapping of them: kept as a plain dict) for a resume."""
        kept = _detached(outcome) if isinstance(outcome, TaskResult) else {n: _detached(r) for n, r in outcome.items()}
        self.store.cache_put(self.key, kept, self.parent.node, self.parent.run_id)


def _detached(result: TaskResult) -> TaskResult:
    """``result`` with its value in it (no reference to its run or client: it pickles)."""
    return TaskResult(result.node, result.status, value=result.value, error=result.error, traceback=result.traceback,
                      attempts=result.attempts, start=result.start, end=result.end, worker=result.worker,
                      reason=result.reason, fallback_used=result.fallback_used,
                      upstream_fallbacks=result.upstream_fallbacks, worker_losses=result.worker_losses,
                      run_id=result.run_id)


def _ended(ending: concurrent.futures.Future, timeout: float) -> bool:
    try:
        ending.result(timeout)
        return True
    except concurrent.futures.TimeoutError:
        return False


def _in_worker_thread() -> bool:
    try:
        from distributed.worker import thread_state
        return bool(getattr(thread_state, "execution_state", None)) and threading.current_thread() is not threading.main_thread()
    except Exception:  # noqa: BLE001
        return False


def _cancelled(worker: Any, key: str) -> bool:
    """Whether ``worker`` no longer wants task ``key`` (its run was cancelled)."""
    try:
        ts = worker.state.tasks.get(key)
    except Exception:  # noqa: BLE001
        return False
    return ts is None or ts.state in ("cancelled", "released", "forgotten")


def _before(engine: Any, item: dict[str, Any]) -> None:
    parent = item["parent"]
    item["depth"] = depth = depth_of(engine.client, parent.run_id) + 1
    _check_depth(depth)


def _after(run: Any, item: dict[str, Any], publish: bool = True) -> None:
    parent, depth = item["parent"], item["depth"]
    run.parent = (parent.run_id, parent.node)
    run.depth = depth
    run.topic_unread_if_quiet = True   # a child with no event but its announcements ends without reading its topic
    _depths[run.id] = depth
    if publish:   # grandchildren spawned elsewhere learn the depth from the scheduler
        client = worker_engine(item["worker"]).client
        client.loop.add_callback(client.scheduler.set_metadata, keys=[METADATA, run.id], value=_spawn_record(item))


def _spawn_record(item: dict[str, Any]) -> dict[str, Any]:
    parent = item["parent"]
    return {"depth": item["depth"], "parent": parent.run_id, "node": parent.node}


def _set_metadata_many(records: list[tuple[list[str], Any]], dask_scheduler: Any = None) -> int:
    """On the scheduler: many ``set_metadata`` at once."""
    for keys, value in records:
        dask_scheduler.set_metadata(keys=keys, value=value)
    return len(records)


def _after_burst(engine: Any, sent: list[tuple[Any, dict[str, Any]]]) -> None:
    """The spawn records of a burst sent together, in one call to the scheduler."""
    records = [([METADATA, run.id], _spawn_record(item)) for run, item in sent]
    try:
        engine.client.run_on_scheduler(_set_metadata_many, records)
    except Exception:  # noqa: BLE001 - cleo_dask not importable on the scheduler: one call each
        for keys, value in records:
            engine.client.loop.add_callback(engine.client.scheduler.set_metadata, keys=keys, value=value)


def _submit(worker: Any, parent: CurrentNode, target: Any, inputs: Mapping[str, Any] | None,
            options: dict[str, Any]) -> Any:
    engine = worker_engine(worker)
    item = {"worker": worker, "parent": parent}
    _before(engine, item)
    run = engine.submit(target, parent.agent, inputs=inputs, **options)
    _after(run, item)
    return run


def _outcome_of(run: Any, single: bool, kept: KeptChild | None) -> Any:
    """The outcome a parent gets for child ``run`` (kept in a durable parent's store if it succeeded)."""
    outcome = run.result(fetch=True)   # values fetched now: read later on the worker's loop, they could not be
    outcome = next(iter(outcome.values())) if single else outcome
    if kept is not None and run.status() == "succeeded":
        kept.keep(outcome)
    return outcome


def _after_queued(run: Any, item: dict[str, Any]) -> None:
    _after(run, item, publish=False)   # published for the whole burst (_after_burst)
    # the outcome is fetched as soon as the child ends (children ending together in one gather),
    # not when the parent gets to awaiting it: awaiting 1,000 children in a row then costs no
    # round trip each
    out = item["outcome"]

    def fill(_: Any) -> None:
        try:
            out.set_result(_outcome_of(run, item["single"], item["kept"]))
        except BaseException as exc:  # noqa: BLE001
            out.set_exception(exc)

    _endings_of(item["worker"]).watch(run).add_done_callback(lambda _: _fetcher.put(run, fill))


_fetcher = OutcomeFetcher(_pool)
_queue = SpawnQueue(_pool, worker_engine, _before, _after_queued, _after_burst)


def spawn(target: Any, inputs: Mapping[str, Any] | None = None, **options: Any) -> ChildRun:
    """Start a child run of ``target`` (a task or a :class:`~cleo_dask.Workflow`) for the running
    task's agent, on the same cluster; ``inputs``: its parameters' values; ``options``: more
    :meth:`Engine.submit` arguments (``priority``, ``name``...).  Only inside a task of a run.

    ``await child`` (async tasks) or ``child.result()`` (sync tasks; the worker slot is freed
    while waiting) gives its outcome.  Bad input is raised here (sync tasks) or at ``await``."""
    parent = current_node()
    if parent is None:
        raise CleoError("cd.spawn works only inside a task of a run (use engine.submit outside)")
    from distributed import get_worker
    from cleo_dask.core.workflow import Workflow
    single = not isinstance(target, Workflow)
    worker = get_worker()
    kept = KeptChild(parent) if parent.store is not None else None
    if kept is not None and kept.outcome is not None:   # a resumed durable parent: this child finished before
        return ChildRun(None, parent, single, kept, worker)
    try:
        asyncio.get_running_loop()
        in_loop = True
    except RuntimeError:
        in_loop = False
    if in_loop:   # an async task: its event loop (the worker's) must not block on the submission; the
        # spawns of a burst go out together (SpawnQueue)
        item = {"worker": worker, "parent": parent, "target": target, "agent": parent.agent, "inputs": inputs,
                "options": options, "outcome": concurrent.futures.Future(), "single": single, "kept": kept}
        return ChildRun(_queue.put(item), parent, single, kept, worker, item["outcome"])
    done: concurrent.futures.Future = concurrent.futures.Future()
    done.set_result(_submit(worker, parent, target, inputs, options))
    return ChildRun(done, parent, single, kept, worker)
