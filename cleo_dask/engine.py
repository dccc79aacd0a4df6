"""The engine: a Dask client (and the cluster it started, if any) that runs workflows for agents."""
from __future__ import annotations

import dataclasses
import html
import logging
import os
import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from distributed import Client, LocalCluster

from cleo_dask import config as _config
from cleo_dask.core import shipping as _shipping
from cleo_dask.core.agent import Agent, check_picklable
from cleo_dask.failures.backoff import Backoff, fixed
from cleo_dask.admission.cluster_needs import check_cluster, check_run
from cleo_dask.core.compile import Defaults
from cleo_dask.core.durations import learned_durations
from cleo_dask.cluster.connect import connect
from cleo_dask.runs.driver import Driver
from cleo_dask.runs.eventsend import EventSender
from cleo_dask.errors import ClusterError, WorkflowError
from cleo_dask.runs.lost import client_closed, scheduler_address
from cleo_dask.cluster.local import dashboard_link, start_local_cluster
from cleo_dask.core.outcome import Status, TaskResult
from cleo_dask.runs.registry import RunRegistry
from cleo_dask.runs.launch import Launcher
from cleo_dask.runs.run import Run
from cleo_dask.runs.submission import batch_item, check_submission
from cleo_dask.runs.windows import compile_run
from cleo_dask.runs.expand import compile_mapped, has_maps
from cleo_dask.core.task import as_spec
from cleo_dask.core.targets import is_factory
from cleo_dask.core.workflow import Workflow

logger = logging.getLogger("cleo_dask")


class Engine:
    """Runs workflows and tasks on a Dask cluster.

    * ``Engine()``: starts a ``LocalCluster`` sized to this machine (settings under
      ``cleo_dask.local-cluster`` in Dask's config, overridable with ``**cluster_kwargs``).
    * ``Engine(address="tcp://host:8786")`` (or ``tls://``, with ``security=``): a running scheduler;
      ``Engine(scheduler_file=...)`` likewise.
    * ``Engine(client=c)``: a ``distributed.Client`` you already have.

    ``upload=[path, ...]``: modules (``.py``), packages (directories with ``__init__.py``), other
    directories (their modules) or ``.zip`` / ``.egg`` files, sent to the scheduler and the workers
    (``Client.upload_file``) for code the cluster cannot import and that cannot travel by value.

    The engine closes only what it started.  Use it as a context manager or call :meth:`close`.
    """

    def __init__(self, address: str | None = None, *, client: Client | None = None,
                 scheduler_file: str | None = None, security: Any = None,
                 default_retries: int | None = None, default_backoff: Backoff | float | None = None,
                 store: str | None = None, timeout: float | None = None,
                 upload: Iterable[str | os.PathLike[str]] | None = None, **cluster_kwargs: Any):
        retries = _config.get("default-retries", 0) if default_retries is None else default_retries
        backoff = default_backoff if default_backoff is not None else _config.get("default-backoff", 0)
        if not isinstance(backoff, Backoff):
            try:
                backoff = fixed(float(backoff))
            except (TypeError, ValueError):
                raise WorkflowError(f"default_backoff must be cd.fixed/cd.exponential or seconds, got {backoff!r}") from None
        from cleo_dask.failures.retry import RetryPolicy
        RetryPolicy(retries, backoff)  # validates both
        if upload:
            from cleo_dask.cluster.upload import files_to_send
            upload = files_to_send(upload)   # a bad path is bad input before any cluster starts
        self.defaults = Defaults(retries, backoff)
        self.cluster: LocalCluster | None = None
        self._own_client = client is None
        for name, given in (("address", address), ("scheduler_file", scheduler_file)):
            if given is not None and not (isinstance(given, (str, os.PathLike)) and str(given).strip()):
                raise ClusterError(f"{name} must be a scheduler address like 'tcp://host:8786' (or a file), got "
                                   f"{given!r}; leave it out to start a LocalCluster")
        if client is not None:
            if address or scheduler_file or cluster_kwargs:
                raise WorkflowError("give either client= or an address / scheduler_file / cluster options, not both")
            self.client = client
        elif address or scheduler_file:
            self.client = connect(address, scheduler_file, security, timeout)
        else:
            self.cluster = start_local_cluster(cluster_kwargs)  # workers never re-import __main__
            self.client = Client(self.cluster, set_as_default=False)
        if self.cluster is None:
            check_cluster(self.client)  # warn about what the cluster lacks (I/O-bound needs: at submit)
        self._driver = Driver()
        self._runs = RunRegistry()
        self._events = EventSender(self.client)
        self._lock = threading.Lock()
        self.launcher = Launcher(self.client, self._driver, self._events, self._runs, self._lock,
                                 journal=lambda: getattr(self, "durable", None),
                                 dashboard_link=lambda: self.dashboard_link)   # its runs get launcher.context
        self.store = store
        self._closed = False
        self._address = scheduler_address(self.client)  # a closed client forgets it
        self.durable = self._start_durable(store)
        self._monitoring = self._start_monitoring()
        if upload:
            self._upload(upload)

    def _upload(self, files: list[tuple[str, str]]) -> None:
        from cleo_dask.cluster.upload import upload
        try:
            upload(self.client, files)
        except BaseException:
            self.close()  # a bad path: do not leave the cluster we started behind
            raise

    # -- submitting ---------------------------------------------------------------------------
    def submit(self, target: Any, agent: Any = None, *, priority: float = 0, fail_fast: bool = False,
               name: str | None = None, inputs: Mapping[str, Any] | None = None,
               critical_path: bool | Mapping[str, float] | None = None, not_before: float | None = None,
               detach: bool = False) -> Run:
        """Submit a workflow (or a single task, as a one-node workflow) for ``agent``; returns at once.

        Validation happens first: a :class:`WorkflowError` is raised before anything is submitted;
        so is a :class:`StoreError` when the engine's journal (``store=``) cannot record the run.
        ``priority``: higher runs first when workers are busy.  ``fail_fast``: at the first final
        failure cancel what is left.  ``inputs``: values of the workflow's parameters
        (:attr:`Workflow.parameters`: task arguments no parent provides), each handed to every
        node taking it; a missing required one or an unknown one is a :class:`WorkflowError`.
        ``critical_path``: order ready tasks by their longest path to the end (estimated from
        task ``duration`` options and, with ``store=``, the durations earlier runs of the workflow
        measured; default: when any is known; ``False``: never); or a mapping
        ``node -> estimated seconds``, e.g. ``{n: r.duration for n, r in earlier.items()}``.
        ``not_before``: epoch seconds; the Dask scheduler holds the run's root tasks (on no
        worker, holding no slot) until then (cleo_dask must be importable on the scheduler).
        ``detach``: validated here, the run is then carried by the scheduler's run host with every
        policy (retries, fallbacks, trigger rules; journaled there with ``store=``), whether this
        client stays or not; returns an :class:`~cleo_dask.hosted.attached.AttachedRun` (see
        :meth:`attach`; cleo_dask must be importable on the scheduler).
        """
        options = dict(priority=priority, fail_fast=fail_fast, name=name, inputs=inputs,
                       critical_path=critical_path, not_before=not_before)
        prepared = self._prepare(target, agent, **options)
        if detach:
            from cleo_dask.hosted.attached import detach_run
            run = prepared[0]
            return detach_run(self.client, Engine, run.workflow, run.agent, options, self.store)  # type: ignore[return-value]
        return self._launch([prepared])[0]

    def attach(self, run_id: str) -> Any:
        """A run carried by the scheduler's run host (``submit(..., detach=True)``, ``cleo-dask run
        --no-wait``), from any process: an :class:`~cleo_dask.hosted.attached.AttachedRun` with
        ``status()``, ``progress()``, ``wait()`` and ``result()`` (values included), while it runs
        and after.  :class:`WorkflowError` if the scheduler hosts no run ``run_id``."""
        self._check_open()
        from cleo_dask.hosted.attached import attach
        return attach(self.client, run_id)

    def submit_many(self, items: Iterable[Mapping[str, Any]]) -> list[Run]:
        """Submit many runs at once: one graph submission to the cluster for all of them.

        Each item is a mapping of :meth:`submit`'s arguments (``target``, optional ``agent``,
        ``priority``, ``name``, ``inputs``, ``not_before``, ...).  Every item is validated first
        (a :class:`WorkflowError` names the first bad one; nothing is submitted); each returned
        :class:`Run` is an ordinary run (results, retries, fallbacks, monitoring).
        """
        prepared, checked = [], set()
        for i, item in enumerate(items):
            kwargs = batch_item(item, i, self.submit)
            try:
                prepared.append(self._prepare(kwargs.pop("target"), kwargs.pop("agent", None), checked=checked,
                                              **kwargs))
            except KeyError:
                raise WorkflowError(f"submit_many: item {i} has no 'target'") from None
            except WorkflowError as exc:
                raise WorkflowError(f"submit_many: item {i}: {exc}") from exc
        return self._launch(prepared)

    def _prepare(self, target: Any, agent: Any = None, *, priority: float = 0, fail_fast: bool = False,
                 name: str | None = None, inputs: Mapping[str, Any] | None = None,
                 critical_path: bool | Mapping[str, float] | None = None,
                 not_before: float | None = None, checked: set[int] | None = None,
                 run_id: str | None = None) -> tuple[Run, Any]:
        """Validate and compile one run (nothing is sent to the cluster yet); ``checked``: ids of
        agents already known to pickle (a batch checks each agent once); ``run_id``: the run's id
        (default: a new one; the queue consumer derives it from the request id)."""
        self._check_open()
        wf = self._as_workflow(target)
        wf.validate()
        inputs = wf.check_inputs(inputs)
        _shipping.ensure(self.client)   # the user's modules the cluster lacks travel by value
        _shipping.check_travel(wf.nodes.values())
        if agent is None:
            agent = Agent("default")
        if self.cluster is None:
            check_run(self.client, wf, agent)   # warns once per cluster, if this run needs what it lacks
        if checked is None or id(agent) not in checked:
            check_picklable(agent)
            if checked is not None:
                checked.add(id(agent))
        check_submission(priority, fail_fast, not_before)
        run_id = run_id or uuid.uuid4().hex[:16]
        past = (lambda: self.durable.journal.node_durations(wf.name)) if self.durable is not None else None
        # durations measured in earlier runs order this one (unless the caller gave its own or said no)
        learn = past is not None and critical_path in (None, True) and not isinstance(critical_path, Mapping)
        learned = learned_durations(wf, past()) if learn else None
        options = dict(defaults=self.defaults, priority=priority, fuse=bool(_config.get("fuse-chains", True)),
                       critical_path=critical_path, inputs=inputs, not_before=not_before, fail_fast=fail_fast,
                       learned=learned)
        held: list[str] = []
        if has_maps(wf):   # mapped nodes: the run gets its own copy of wf, expanded at run time
            wf, compiled, held = compile_mapped(wf, run_id, agent, **options)
            windows = None
        else:
            compiled, windows = compile_run(wf, run_id, agent, past=past, **options)
        run = self.launcher.new_run(wf, agent, run_id, compiled, priority=priority, fail_fast=fail_fast,
                                    defaults=self.defaults, name=name)
        run.use_windows(windows)   # a big workflow: the rest goes window by window
        run.add_held(held)
        run.inputs = dict(inputs) if inputs else {}  # kept by the journal to resume the run
        return run, compiled

    def _launch(self, prepared: list[tuple[Run, Any]]) -> list[Run]:
        """Announce prepared runs and send their graphs (see :meth:`Launcher.launch`)."""
        return self.launcher.launch(prepared)

    def run(self, task: Any, agent: Any = None, *, timeout: float | None = None, **inputs: Any) -> TaskResult:
        """Run one task now and wait for it: a :class:`TaskResult`, never an exception.

        ``inputs`` are passed to the task as keyword arguments.  Invalid input, too, comes back as
        a failed result (with a :class:`WorkflowError` as its ``error``).
        """
        name = getattr(getattr(task, "spec", None), "name", None) or getattr(task, "__name__", "task")
        try:
            run = self.submit(task, agent, inputs=inputs)
            outcome = run.result(timeout=timeout)
            return next(iter(outcome.values()))
        except Exception as exc:  # noqa: BLE001 - the contract: never raises
            return TaskResult(str(name), Status.FAILED, error=exc, traceback=None)

    def _as_workflow(self, target: Any) -> Workflow:
        """``target`` as a workflow: a single task is a one-node workflow (its arguments its parameters)."""
        if isinstance(target, Workflow):
            return target
        if isinstance(target, str):
            from cleo_dask.util.imports import resolve
            obj = resolve(target)
            if is_factory(obj):   # pkg:build_workflow, as `cleo-dask run` reads it (core/targets)
                obj = obj()
                if not isinstance(obj, Workflow):
                    raise WorkflowError(f"{target}: a function naming a workflow must return a cleo_dask.Workflow, "
                                        f"got {type(obj).__name__}")
            return self._as_workflow(obj)
        spec = as_spec(target)
        wf = Workflow(spec.name)
        wf.add(spec)
        return wf

    def consume(self, queue: Any, **options: Any) -> Any:
        """Run the requests of ``queue`` (a :class:`cleo_dask.queues.Queue`) until stopped, publishing
        each outcome on its results stream; needs ``store=`` (the request id is the run's idempotency
        key in the journal).  ``options``: :class:`cleo_dask.queues.consumer.Consumer`'s (``max_in_flight``,
        ``stop``, ``limit``, ...); returns the consumer's counts."""
        from cleo_dask.queues.consumer import Consumer
        return Consumer(self, self._durability(), queue, prepare=self._prepare, launch=self._launch,
                        as_workflow=self._as_workflow, **options).run()

    # -- reading ------------------------------------------------------------------------------
    @property
    def dashboard_link(self) -> str | None:
        """The Dask dashboard's address (``None`` if the scheduler serves none)."""
        try:  # our own cluster: where its dashboard really listens (127.0.0.1 by default)
            return dashboard_link(self.cluster) if self.cluster is not None else self.client.dashboard_link
        except Exception:  # noqa: BLE001
            return None

    @property
    def runs_in_memory(self) -> dict[str, Run]:
        """The runs submitted through this engine (by id)."""
        with self._lock:
            return dict(self._runs)

    def get_run(self, run_id: str) -> Run:
        """A run of this engine by id."""
        try:
            return self._runs[run_id]
        except KeyError:
            raise WorkflowError(f"no run {run_id!r} in this engine") from None

    def add_listener(self, fn: Any) -> None:
        """Call ``fn(kind, run)`` on ``"submitted"`` and ``"finished"`` (journal, monitoring)."""
        self.launcher.listeners.append(fn)

    # -- monitoring (issue 9: scheduler plugin, dashboard page, logs) -------------------------
    def _start_monitoring(self) -> bool:
        from cleo_dask.monitor import logs as _logs
        from cleo_dask.monitor.install import install
        self.add_listener(_logs.on_run)
        _logs.quiet_worker_errors(self.client)   # cleo logs failed attempts itself
        if not _config.get("monitor.enabled", True):
            return False
        _logs.setup_client(self.client)
        return install(self.client)

    @property
    def cleo_dashboard_link(self) -> str | None:
        """The cleo page of the Dask dashboard (runs, DAGs by state, attempts per worker)."""
        from cleo_dask.monitor.dashboard import page_path
        link = self.dashboard_link
        if not link or not self._monitoring:
            return None
        base = link.rsplit("/status", 1)[0] if link.endswith("/status") else link.rstrip("/")
        return base + page_path()

    # -- schedules (issue 7: delay / at / every / cron, misfire policy, persistent store) ------
    def schedule(self, target: Any, agent: Any = None, *, delay: Any = None, at: Any = None, every: Any = None,
                 cron: str | None = None, timezone: Any = None, jitter: Any = 0, misfire_grace: Any = ...,
                 coalesce: Any = ..., max_running: int | None = None, name: str | None = None,
                 start: Any = None, inputs: Mapping[str, Any] | None = None) -> Any:
        """Run ``target`` (a task, a workflow or ``"package.module:name"``) for ``agent`` on a schedule.

        Exactly one of ``delay`` (seconds or timedelta), ``at`` (aware datetime), ``every``
        (seconds or timedelta, optional ``jitter`` and ``start``) or ``cron`` (in ``timezone``).
        ``misfire_grace`` (default: config ``cleo_dask.schedules.misfire-grace``), ``coalesce``
        and ``max_running`` set the misfire policy.  ``inputs``: the workflow parameters' values
        of every run (checked now: :class:`ScheduleError` naming a missing or unknown one; JSON
        values with a persistent store).  Returns a :class:`cleo_dask.Schedule`; its runs are
        ordinary :meth:`submit` runs.  In-memory unless the engine has ``store=``.
        """
        return self._scheduled_runs().schedule(
            self._get_scheduler(), target, agent, delay=delay, at=at, every=every, cron=cron, timezone=timezone,
            jitter=jitter, misfire_grace=misfire_grace, coalesce=coalesce, max_running=max_running, name=name,
            start=start, inputs=inputs)

    def schedules(self) -> list[Any]:
        """The engine's active and paused schedules (those of its store, if it has one)."""
        return self._get_scheduler().schedules()

    def _get_scheduler(self) -> Any:
        with self._lock:
            if getattr(self, "_scheduler", None) is None:
                from cleo_dask.schedules.store import ScheduleStore
                self._scheduler = self._new_scheduler(ScheduleStore(self.store))
            return self._scheduler

    def serve_schedules(self, store: Any) -> Any:
        """Fire the schedules kept in ``store`` (a :class:`~cleo_dask.schedules.store.ScheduleStore`)
        from this engine, holding the store's lease (``cleo-dask serve``); the scheduling loop."""
        with self._lock:
            self._scheduler = self._new_scheduler(store, require_lease=True)
            return self._scheduler

    def _new_scheduler(self, store: Any, **kwargs: Any) -> Any:
        """The scheduling loop of ``store`` firing this engine's runs (pre-staged when the cluster can hold them)."""
        return self._scheduled_runs().new_scheduler(store, **kwargs)

    def _scheduled_runs(self) -> Any:
        """The schedules' side of this engine (:class:`cleo_dask.schedules.engine_side.ScheduledRuns`)."""
        if getattr(self, "_scheduled", None) is None:
            from cleo_dask.schedules.engine_side import ScheduledRuns
            self._scheduled = ScheduledRuns(self.client, prepare=self._prepare, launch=self._launch,
                                            send_event=self._events.send, as_workflow=self._as_workflow)
        return self._scheduled

    # -- durable runs (issue 10: journal, result store, resume, history) ---------------------
    def use_store(self, store: Any) -> Any:
        """Journal this engine's runs in ``store`` from now on (as ``Engine(store=...)`` does), unless it
        already keeps a journal; the :class:`~cleo_dask.durable.durability.Durability`.  A bad store
        is a :class:`StoreError` (and closes the engine: it would have failed at construction)."""
        if self.durable is None:
            self.store = store
            self.durable = self._start_durable(store)
        return self.durable

    def _start_durable(self, store: Any) -> Any:
        if store is None:
            return None
        from cleo_dask.durable.durability import Durability
        try:
            durability = Durability(self, store)
        except BaseException:
            self.close()  # a bad store: do not leave the cluster we started behind
            raise
        self.defaults = dataclasses.replace(self.defaults, store=durability.results)  # workers keep outputs
        return durability

    def _durability(self) -> Any:
        if self.durable is None:
            from cleo_dask.errors import StoreError
            raise StoreError("this engine keeps no journal: create it with Engine(store='runs.db')")
        return self.durable

    def resume(self, run_id: str, *, force: bool = False) -> Run:
        """Resume a journaled run (e.g. after the client crashed): nodes that finished keep their
        stored results, only the others run.  :class:`StoreError` for an unknown run id, a run
        still running in another live process of this host (unless ``force``), or a damaged
        journal or result file (naming it)."""
        run = self._durability().resume(run_id, force=force)
        from cleo_dask.durable.signals import replay_signals
        replay_signals(self.client, self.durable.journal.path, run.id)   # signals received before keep
        return run

    def signal(self, run_id: str, name: str, value: Any = None) -> str:
        """Send signal ``name`` with ``value`` to run ``run_id``: its node ``name``
        (:meth:`Workflow.add_signal`) is done with ``value`` as its result.  A :class:`CleoError` for
        an unknown run or signal name, or a run already finished.  With ``store=`` the signal is
        journaled (its value must be JSON) and delivered again if the run is resumed.  Returns
        ``"delivered"``."""
        from cleo_dask.durable.signals import send_signal
        self._check_open()
        return send_signal(run_id, name, value, client=self.client, run=self.runs_in_memory.get(run_id),
                           journal=self.durable.journal if self.durable is not None else None)

    def runs(self, *, agent: str | None = None, status: str | None = None, workflow: str | None = None,
             limit: int | None = None) -> list[Any]:
        """Run history from the journal, newest first: :class:`RunRecord` s, optionally only of one
        ``agent`` id, ``status`` (running, succeeded, failed, cancelled, interrupted) or ``workflow`` name."""
        return self._durability().runs(agent=agent, status=status, workflow=workflow, limit=limit)

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def _check_open(self) -> None:
        """A :class:`ClusterError` if runs cannot be sent: the engine or its client is closed (Dask
        closes a client that could not reconnect to a lost scheduler; its futures never finish)."""
        if self._closed:
            raise ClusterError("this engine is closed: nothing was submitted; create a new cd.Engine")
        if client_closed(self.client):
            raise ClusterError(f"the engine's client is closed (scheduler {self._address or 'unknown'} lost, or the "
                               "client closed): nothing was submitted; create a new cd.Engine once a cluster is up")

    def close(self) -> None:
        """Stop the driver; close the client and cluster if this engine started them."""
        if self._closed:
            return
        self._closed = True
        if getattr(self, "durable", None) is not None:
            self.durable.close()
        if getattr(self, "_scheduler", None) is not None:
            self._scheduler.close()  # schedules (issue 7): stop firing before the client goes
        self._driver.close()
        from cleo_dask.runs.keep import keep_engine_runs
        keep_engine_runs(self.client, self._runs, self._events)  # values of outcomes still held
        if self._own_client:
            from cleo_dask.runs.lost import quiet_if_reconnecting
            with quiet_if_reconnecting(self.client):
                self.client.close()
            if self.cluster is not None:
                self.cluster.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<cleo_dask.Engine scheduler={self.client.scheduler.address if self.client.scheduler else None} " \
               f"runs={len(self._runs)}>"

    def _repr_html_(self) -> str:
        link = self.dashboard_link
        return (f"<div><strong>cleo_dask Engine</strong><br>scheduler: <code>"
                f"{html.escape(str(self.client.scheduler.address if self.client.scheduler else ''))}</code>"
                f"<br>workers: {len(self.client.scheduler_info().get('workers', {}))}, runs: {len(self._runs)}"
                + (f"<br>dashboard: <a href='{html.escape(link)}' target='_blank'>{html.escape(link)}</a>" if link else "")
                + "</div>")
