"""Cluster-wide admission: per-agent ``max_concurrency`` and per-task ``rate_limit``.

Limits must hold across every worker and every client, and a task waiting for its turn must hold
no worker slot.  So they are enforced on the scheduler, by a scheduler plugin
(:class:`AdmissionPlugin`), not inside tasks (a ``distributed.Semaphore`` acquired in a task
would sit on a slot while it waits):

* The compiler marks each limited unit with the annotation ``cleo_admission``:
  ``{"limits": {"agent:<id>": n}, "rates": {"task:<module.qualname>": [count, seconds]}}``.
* When such a graph arrives, the plugin gives those tasks a resource restriction no worker
  offers (:data:`GATE`): once their dependencies are done they wait in the scheduler's
  ``no-worker`` state, on no worker, in the plugin's queues.
* The plugin admits a waiting task when every limit of its *lane* (the set of limits it is
  under) has room and every rate allows a start: it lifts the restriction and moves the task to
  ``processing`` (Dask then picks the worker as usual).  When the task leaves ``processing``
  (finished, erred, lost with its worker, cancelled) the lease is returned and the next task of
  the lanes sharing that limit is admitted.  A task that runs again (Dask ``retries``,
  ``Client.retry``, worker loss) is gated again.
* Among waiting tasks the best Dask priority goes first (user priority, then cleo's fair share
  rank, then submission order), so priorities still win and agents interleave.
* ``"not_before": t`` (epoch seconds; scheduled runs pre-staged ahead of their due time): the
  task is gated like the others but joins its lane's queue only once ``t`` has come (a task
  without limits is then admitted at once), so until then it holds no slot and no lease.  The
  plugin sleeps on one timer for the earliest such time.  Once released, a task that runs again
  (retries, lost worker) is not held again.  The lateness of each release (release time minus
  ``t``) is kept (:func:`release_lateness`) and handed to the observers of :func:`observe_releases`
  (the monitor's ``cleo_schedule_lateness_seconds`` metric).
* Delayed retries (:mod:`cleo_dask.failures.hold`): a worker whose attempt failed and will be
  retried after a delay sends :data:`~cleo_dask.failures.hold.HOLD_OP` before handing the task back
  (``Reschedule``); the key is then held like a not-before task until the delay is over, its
  dependents left waiting.  The plugin keeps the key's failed attempts for its next attempt.

The plugin lives on the scheduler, so cleo_dask must be importable there (it already is
wherever cleo's per-key annotations are used); :func:`ensure_installed` installs it once per
cluster, idempotently, from any client.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from cleo_dask.admission import stealing
from cleo_dask.admission.concurrency import agent_id
from cleo_dask.errors import CleoError
from cleo_dask.admission.ratelimit import Rate, next_start, parse_rate, window_allows
from cleo_dask.admission.refill import SlotRefill
from cleo_dask.admission.signals import SignalWaits
from cleo_dask.failures.hold import HISTORY_ANNOTATION, HOLD_OP, RETRY_ANNOTATION, HeldRetries

logger = logging.getLogger("cleo_dask")

# who hears the lateness of each not-before release in this process (the monitor adds its metric:
# admission never imports the monitor)
_release_observers: list[Callable[[float], None]] = []

PLUGIN_NAME = "cleo-admission"
ANNOTATION = "cleo_admission"
GATE = "cleo-admission-gate"  # a resource no worker has: a gated task waits in 'no-worker'
TOMBSTONE_SECONDS = 300.0  # how long a key withdrawn before its graph arrived is remembered


# -- client side: what a unit is limited by -------------------------------------------------------
def task_ident(spec: Any) -> str:
    """The cluster-wide identity of a task for its rate limit: ``module.qualname`` of its body."""
    fn = spec.fn
    module = getattr(fn, "__module__", None) or "?"
    qual = getattr(fn, "__qualname__", None) or spec.name
    return f"{module}.{qual}"


def with_not_before(adm: dict[str, Any] | None, not_before: float | None) -> dict[str, Any] | None:
    """``adm`` (a unit's annotation or ``None``) with a not-before time (epoch seconds) added."""
    if not_before is None:
        return adm
    return {**(adm or {"limits": {}, "rates": {}}), "not_before": float(not_before)}


def unit_admission(specs: list[Any], agent: Any) -> dict[str, Any] | None:
    """The ``cleo_admission`` annotation of a unit running ``specs`` for ``agent`` (None: unlimited)."""
    limits: dict[str, int] = {}
    rates: dict[str, list[float]] = {}
    n = getattr(agent, "max_concurrency", None)
    if n is not None:
        limits[f"agent:{agent_id(agent)}"] = int(n)
    for spec in specs:
        if spec.rate_limit is not None:
            r = parse_rate(spec.rate_limit)
            rates[f"task:{task_ident(spec)}"] = [r.count, r.per]
    if not limits and not rates:
        return None
    return {"limits": limits, "rates": rates}


_installed: set[str] = set()


def ensure_installed(client: Any) -> None:
    """Install :class:`AdmissionPlugin` on ``client``'s scheduler unless it is there already."""
    ident = f"{client.id}:{getattr(client.scheduler, 'address', '')}"
    if ident in _installed:
        return
    try:
        client.run_on_scheduler(_install)
    except Exception as exc:  # noqa: BLE001 - typically: cleo_dask not importable on the scheduler
        raise CleoError("max_concurrency / rate_limit are enforced by a scheduler plugin, which could not be "
                        f"installed ({type(exc).__name__}: {exc}); install cleo_dask (same version) in the "
                        "scheduler's environment") from exc
    _installed.add(ident)


def _install(dask_scheduler: Any = None) -> bool:
    if PLUGIN_NAME in dask_scheduler.plugins:
        return False
    dask_scheduler.add_plugin(AdmissionPlugin(dask_scheduler), name=PLUGIN_NAME)
    return True


def observe_releases(fn: Callable[[float], None]) -> None:
    """Call ``fn(seconds)`` with the lateness of each not-before release made in this process
    (release time minus ``not_before``); adding the same ``fn`` again changes nothing."""
    if fn not in _release_observers:
        _release_observers.append(fn)


def admission_state(client: Any) -> dict[str, Any]:
    """The plugin's state (running counts, queued tasks per limit) as seen on the scheduler."""
    return client.run_on_scheduler(_state_on_scheduler)


def _state_on_scheduler(dask_scheduler: Any = None) -> dict[str, Any]:
    plugin = dask_scheduler.plugins.get(PLUGIN_NAME)
    if plugin is None:
        return {}
    return {"running": dict(plugin.running), "limits": dict(plugin.limit),
            "queued": sum(1 for k in plugin.queued), "held": len(plugin.held), "sleeping": len(plugin.not_before),
            "retries_held": len(plugin.retry_holds)}


def release_lateness(client: Any, clear: bool = False) -> list[float]:
    """Seconds between each recent not-before time and the task's release (the last 200,000)."""
    return client.run_on_scheduler(_release_lateness, clear)


def _release_lateness(clear: bool = False, dask_scheduler: Any = None) -> list[float]:
    plugin = dask_scheduler.plugins.get(PLUGIN_NAME)
    if plugin is None:
        return []
    out = list(plugin.released)
    if clear:
        plugin.released.clear()
    return out


def withdraw(client: Any, keys: list[Any]) -> list[Any]:
    """Of ``keys`` (tasks with a not-before time, still wanted by the caller), those not released:
    they never will be (the caller cancels them).  Atomic on the scheduler, so a key is either
    withdrawn or released.  A key whose graph has not reached the scheduler yet (this call can
    overtake the submission) is withdrawn in advance."""
    return client.run_on_scheduler(_withdraw, list(keys))


def _withdraw(keys: list[Any], dask_scheduler: Any = None) -> list[Any]:
    plugin = dask_scheduler.plugins.get(PLUGIN_NAME)
    if plugin is None:
        return []
    now = time.time()
    for key in [k for k, t in plugin.tombstones.items() if now - t > TOMBSTONE_SECONDS]:
        del plugin.tombstones[key]  # its graph never came (cancelled first): forget it
        plugin.withdrawn.discard(key)
    out = []
    for key in keys:
        if plugin.not_before.pop(key, None) is not None:
            plugin.withdrawn.add(key)
            out.append(key)
        elif key not in dask_scheduler.tasks:  # not arrived yet (the caller holds its future: not forgotten)
            plugin.withdrawn.add(key)
            plugin.tombstones[key] = now
            out.append(key)
    return out


# -- scheduler side ---------------------------------------------------------------------------------
class _Lane:
    """Tasks under the same limits and rates, waiting in priority order."""

    __slots__ = ("limits", "rates", "heap")

    def __init__(self, limits: tuple[str, ...], rates: tuple[str, ...]):
        self.limits = limits
        self.rates = rates
        self.heap: list[tuple[Any, int, str]] = []


class AdmissionPlugin(SchedulerPlugin):
    """Admits gated tasks as leases free up (see the module docstring).  Runs on the scheduler's
    event loop only, so it needs no locks; its hooks cost one dict lookup for other tasks."""

    name = PLUGIN_NAME

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        self.lane_of: dict[str, tuple] = {}        # gated key (until forgotten) -> lane id
        self.lanes: dict[tuple, _Lane] = {}
        self.lanes_of: dict[str, set[tuple]] = {}  # limit or rate name -> lanes under it
        self.limit: dict[str, int] = {}
        self.running: dict[str, int] = {}
        self.interval: dict[str, float] = {}
        self.due: dict[str, float | None] = {}
        self.waiting: dict[str, int] = {}          # rate name -> tasks queued under it
        self.rate: dict[str, Rate] = {}
        self.recent: dict[str, deque] = {}         # rate name -> start times in the last period
        self.held: set[str] = set()                # keys admitted and not yet out of processing
        self.via_queue: set[Any] = set()           # admitted through Dask's own queue (not gated again)
        self.queued: set[str] = set()
        self._dirty: set[tuple] = set()
        self._pump_pending = False
        self.refill = SlotRefill(scheduler)
        self._timers: dict[str, Any] = {}
        self._seq = itertools.count()
        self.not_before: dict[Any, float] = {}     # key -> epoch s, until released (or withdrawn)
        self.sleepers: list[tuple[float, int, Any]] = []  # (not_before, seq, key) of keys in no-worker
        self.withdrawn: set[Any] = set()           # never to be released (cancelled by their client)
        self.tombstones: dict[Any, float] = {}     # withdrawn before their graph arrived -> when
        self.released: deque = deque(maxlen=200_000)  # release lateness, seconds
        self._alarm: Any = None
        self._alarm_at = float("inf")
        self.signals = SignalWaits(scheduler, self.admit)   # signal nodes held until their signal
        stealing.guard(scheduler)   # no duration estimate of 0 for work stealing to assert on
        self.retry_holds = HeldRetries()            # delayed retries held here (failures.hold)
        scheduler.stream_handlers[HOLD_OP] = self._hold_retry

    # hooks ---------------------------------------------------------------------------------
    def update_graph(self, scheduler: Any, *, annotations: dict[str, dict[Any, Any]] | None = None,
                     **kwargs: Any) -> None:
        stealing.floor_prefixes(scheduler)
        for key in (annotations or {}).get(RETRY_ANNOTATION, ()):   # armed: this scheduler holds its retries
            ts = scheduler.tasks.get(key)
            if ts is not None and ts.annotations is not None:
                ts.annotations.setdefault(HISTORY_ANNOTATION, ())   # in place: no dict per key (a hold copies it)
        for key, adm in (annotations or {}).get(ANNOTATION, {}).items():
            ts = scheduler.tasks.get(key)
            if ts is None or key in self.lane_of:
                continue
            self.lane_of[key] = self._lane(adm)
            ts.resource_restrictions = {GATE: 1}
            if "signal" in adm:
                self.signals.add(key, adm)
            nb = adm.get("not_before")
            if nb is not None and key not in self.withdrawn:
                self.not_before[key] = nb

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "erred" and start == "processing":   # its own failure (its dependents err from waiting)
            self._count_erred(key)
        elif finish == "released" and start == "processing":   # handed back (Reschedule), or cancelled
            self.refill.soon()
        lane = self.lane_of.get(key)
        if lane is None:
            return
        if key in self.held and finish != "processing":
            self._release(key, lane)
        if key in self.via_queue:
            if finish in ("released", "waiting"):
                return   # on its way to Dask's queue (or a free slot): not gated again
            self.via_queue.discard(key)
        if finish == "no-worker":
            ts = self.scheduler.tasks.get(key)
            if ts is not None and key not in self.queued:
                ts.resource_restrictions = {GATE: 1}
                if key in self.withdrawn or (self.signals.of_key and self.signals.hold(key)):
                    return
                self._sleep_or_enqueue(key, lane, ts)
        else:
            self._dequeued(key, lane)
            if finish == "forgotten":
                del self.lane_of[key]
                self.not_before.pop(key, None)
                self.withdrawn.discard(key)
                self.tombstones.pop(key, None)
                self.signals.forget(key)
                self.retry_holds.forget(key)
            elif finish in ("released", "waiting"):  # will run again: gate it again
                ts = self.scheduler.tasks.get(key)
                if ts is not None:
                    ts.resource_restrictions = {GATE: 1}

    def admit(self, key: Any) -> None:
        """Let a gated key held by another hold (a signal wait) into its lane's queue, if it is ready."""
        ts, lane = self.scheduler.tasks.get(key), self.lane_of.get(key)
        if ts is None or lane is None or key in self.withdrawn or ts.state != "no-worker" or key in self.queued:
            return
        self._sleep_or_enqueue(key, lane, ts)

    def _sleep_or_enqueue(self, key: Any, lane: tuple, ts: Any) -> None:
        """A gated key no other hold keeps: asleep until its not-before time, else into its lane's queue."""
        nb = self.not_before.get(key)
        if nb is not None and nb > time.time():
            self._sleep(key, nb)
            return
        self._enqueue(key, lane, ts)

    # not-before times ----------------------------------------------------------------------
    def _enqueue(self, key: Any, lane: tuple, ts: Any) -> None:
        self._enqueued(key, lane)
        heapq.heappush(self.lanes[lane].heap, (ts.priority, next(self._seq), key))
        self._mark(lane)

    def _sleep(self, key: Any, nb: float) -> None:
        heapq.heappush(self.sleepers, (nb, next(self._seq), key))
        if nb < self._alarm_at:
            if self._alarm is not None:
                self._alarm.cancel()
            self._alarm_at = nb
            self._alarm = asyncio.get_running_loop().call_later(max(0.0, nb - time.time()), self._wake_sleepers)

    def _wake_sleepers(self) -> None:
        """The earliest not-before time has come: enqueue every task whose time has come."""
        self._alarm, self._alarm_at = None, float("inf")
        now = time.time()
        tasks = self.scheduler.tasks
        while self.sleepers and self.sleepers[0][0] <= now + 0.0005:
            _, _, key = heapq.heappop(self.sleepers)
            ts = tasks.get(key)
            lane = self.lane_of.get(key)
            if ts is None or lane is None or key in self.withdrawn or ts.state != "no-worker" or key in self.queued:
                continue
            self._enqueue(key, lane, ts)
        if self.sleepers:
            nb = self.sleepers[0][0]
            self._alarm_at = nb
            self._alarm = asyncio.get_running_loop().call_later(max(0.0, nb - now), self._wake_sleepers)

    def _hold_retry(self, key: Any = None, delay: float = 0.0, record: Any = (), **_: Any) -> None:
        """A worker hands ``key`` back for a retry after ``delay`` s: hold it until then (its
        ``Reschedule`` follows on the same stream).  Never raises: that would drop the worker's stream."""
        try:
            ts = self.scheduler.tasks.get(key)
            if ts is None or ts.state != "processing":
                return   # (a withdrawn key is held too: it then waits on no worker until forgotten)
            if key not in self.lane_of:
                self.lane_of[key] = self._lane({})
            self.not_before[key], past = self.retry_holds.hold(key, delay, record, time.time())
            ts.annotations = {**(ts.annotations or {}), HISTORY_ANNOTATION: past}
        except Exception:  # noqa: BLE001
            logger.exception("cleo_dask: could not hold the retry of %r", key)

    def _count_erred(self, key: Any) -> None:
        """An armed key erred: its next attempt (if the client retries it) counts this one too."""
        ts = self.scheduler.tasks.get(key)
        if ts is not None and ts.annotations and HISTORY_ANNOTATION in ts.annotations:
            past = self.retry_holds.erred(key, ts.annotations[HISTORY_ANNOTATION])
            ts.annotations = {**ts.annotations, HISTORY_ANNOTATION: past}

    def _record_release(self, key: Any) -> None:
        nb = self.not_before.pop(key, None)
        if nb is None or self.retry_holds.released(key):   # a held retry is no schedule's lateness
            return
        late = time.time() - nb
        self.released.append(late)
        for observe in _release_observers:
            try:
                observe(late)
            except Exception:  # noqa: BLE001 - metrics must never hold a task back
                pass

    # bookkeeping ---------------------------------------------------------------------------
    def _lane(self, adm: dict[str, Any]) -> tuple:
        limits = tuple(sorted((adm.get("limits") or {}).items()))
        rates = tuple(sorted((k, float(c), float(p)) for k, (c, p) in (adm.get("rates") or {}).items()))
        for name, n in limits:
            self.limit[name] = int(n)  # the latest submission's value wins
            self.running.setdefault(name, 0)
        for name, count, per in rates:
            self.interval[name] = per / count
            self.rate[name] = Rate(count, per)
            self.recent.setdefault(name, deque())
            self.due.setdefault(name, None)
            self.waiting.setdefault(name, 0)
        lane_id = (tuple(n for n, _ in limits), tuple(n for n, _, _ in rates))
        if lane_id not in self.lanes:
            self.lanes[lane_id] = _Lane(*lane_id)
            for name in lane_id[0] + lane_id[1]:
                self.lanes_of.setdefault(name, set()).add(lane_id)
        return lane_id

    def _enqueued(self, key: Any, lane_id: tuple) -> None:
        self.queued.add(key)
        now = time.monotonic()
        for name in self.lanes[lane_id].rates:
            due = self.due[name]
            if self.waiting[name] == 0 and due is not None and due < now:
                self.due[name] = now  # nobody was waiting: the schedule restarts now (no burst)
            self.waiting[name] += 1

    def _dequeued(self, key: Any, lane_id: tuple) -> None:
        if key in self.queued:
            self.queued.discard(key)
            for name in self.lanes[lane_id].rates:
                self.waiting[name] -= 1

    def _release(self, key: Any, lane_id: tuple) -> None:
        self.held.discard(key)
        for name in self.lanes[lane_id].limits:
            self.running[name] -= 1
            for other in self.lanes_of[name]:
                self._mark(other)

    def _mark(self, lane_id: tuple) -> None:
        self._dirty.add(lane_id)
        if not self._pump_pending:
            self._pump_pending = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _wake(self, name: str) -> None:
        self._timers.pop(name, None)
        for lane_id in self.lanes_of.get(name, ()):
            self._mark(lane_id)

    # admitting -----------------------------------------------------------------------------
    def _head(self, lane: _Lane) -> tuple[Any, int, str] | None:
        tasks = self.scheduler.tasks
        while lane.heap:
            item = lane.heap[0]
            ts = tasks.get(item[2])
            if item[2] in self.queued and ts is not None and ts.state == "no-worker" and item[2] not in self.withdrawn:
                return item
            heapq.heappop(lane.heap)
        return None

    def _pump(self) -> None:
        self._pump_pending = False
        dirty, self._dirty = self._dirty, set()
        now = time.monotonic()
        heads = []
        for lane_id in dirty:
            head = self._head(self.lanes[lane_id])
            if head is not None:
                heads.append((head[0], head[1], lane_id))
        heapq.heapify(heads)
        recs: dict[Any, str] = {}
        while heads:
            _, _, lane_id = heapq.heappop(heads)
            lane = self.lanes[lane_id]
            head = self._head(lane)
            if head is None:
                continue
            if any(self.running[n] >= self.limit[n] for n in lane.limits):
                continue  # woken again when one of these limits frees a lease
            blocked = False
            for name in lane.rates:
                ok, due = next_start(self.due[name], now, self.interval[name])
                if ok:
                    ok, due = window_allows(self.recent[name], now, self.rate[name])
                if not ok:
                    blocked = True
                    if name not in self._timers:
                        self._timers[name] = asyncio.get_running_loop().call_later(
                            max(0.0, due - now), self._wake, name)
            if blocked:
                continue
            for name in lane.rates:
                self.due[name] = next_start(self.due[name], now, self.interval[name])[1]
                self.recent[name].append(now)
            for name in lane.limits:
                self.running[name] += 1
            heapq.heappop(lane.heap)
            key = head[2]
            self._dequeued(key, lane_id)
            self.held.add(key)
            if self.not_before:
                self._record_release(key)
            self.scheduler.tasks[key].resource_restrictions = None
            if not lane.limits and not lane.rates and not math.isinf(self.scheduler.WORKER_SATURATION):
                # only held (a delay, a retry's backoff, a signal): on a queuing scheduler it joins
                # Dask's queue, which hands it to the next free slot by priority, rather than
                # piling onto one worker (released -> waiting -> queued or processing)
                self.via_queue.add(key)
                recs[key] = "released"
            else:
                recs[key] = "processing"
            nxt = self._head(lane)
            if nxt is not None:
                heapq.heappush(heads, (nxt[0], nxt[1], lane_id))
        if recs:
            self.scheduler.transitions(recs, stimulus_id=f"cleo-admit-{time.time()}")
