"""Compile a validated :class:`Workflow` into one Dask graph (a plain dict of ``dask.task_spec``
tasks plus per-key annotations), without touching a cluster.

* One Dask task per *unit*: a linear run of nodes (each the only child of the one before, each
  the only parent of the one after) is fused into one task, so a chain costs one scheduler
  round trip per run of nodes, not per node.  Every node still gets its own record.
* The agent is embedded in the graph (pickled once per submission, memoised by pickle), as a
  plain argument of each task, not a Dask key: a key every root depended on would pull all roots
  onto the worker holding it (``decide_worker`` only considers workers holding dependencies).
* Per-key annotations carry Dask's ``retries`` (immediate retries) and ``priority`` (the user's,
  plus critical-path bottom levels when durations are known).
"""
from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import chain
from operator import attrgetter
from dataclasses import dataclass, field
from typing import Any

from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from dask.task_spec import Task, TaskRef

from cleo_dask.admission.plugin import ANNOTATION as ADMISSION, unit_admission, with_not_before
from cleo_dask.failures.backoff import NO_BACKOFF, Backoff
from cleo_dask.util.gcpause import gc_paused
from cleo_dask.core.parameters import receives_inputs
from cleo_dask.failures.retry import RetryPolicy
from cleo_dask.core.shipping import data_node, graph_value
from cleo_dask.core.signal import mark_signals, signal_of
from cleo_dask.core.task import TaskSpec
from cleo_dask.core.nodeoutput import NodeOutput
from cleo_dask.core.plainunit import IndexedPlainUnit, PlainUnit
from cleo_dask.core.priorities import set_priorities
from cleo_dask.core.batch import BatchCall, run_batch, run_batch_async
from cleo_dask.core.batching import BatchSettings, batch_units, eligible
from cleo_dask.core.worker import NodeCall, UnitCall, run_unit, run_unit_async
from cleo_dask.core.heldretry import retry_annotation
from cleo_dask.failures.hold import RETRY_ANNOTATION
from cleo_dask.core.node import Node
from cleo_dask.core.mapping import ItemNode
from cleo_dask.core.workflow import Workflow


@dataclass(frozen=True)
class Defaults:
    """Engine-wide defaults for tasks that set no ``retries`` / ``backoff`` of their own."""

    retries: int = 0
    backoff: Backoff = NO_BACKOFF
    store: Any = None  # durable runs: the ResultStore workers write outputs to


def retry_policy(node: Node, defaults: Defaults) -> RetryPolicy:
    """The retry policy a node runs under, engine defaults filled in."""
    t = node.task
    args = (defaults.retries if t.retries is None else t.retries,
            defaults.backoff if t.backoff is None else t.backoff, t.retry_on)
    try:
        return _cached_policy(*args)  # compiling asks once or twice per node: skip re-validating
    except TypeError:  # an unhashable custom backoff
        return RetryPolicy(*args)


@functools.lru_cache(maxsize=1024)
def _cached_policy(retries: int, backoff: Backoff, retry_on: tuple) -> RetryPolicy:
    return RetryPolicy(retries, backoff, retry_on)


@dataclass
class Compiled:
    """A compiled (sub)graph: the tasks, where each node's output lives, and the annotations."""

    dsk: dict[str, Any]
    units: dict[str, tuple[str, ...]]          # unit key -> node names
    location: dict[str, tuple[str, int]]       # node -> (unit key, index in unit or -1)
    retries: dict[str, int] = field(default_factory=dict)
    priority: dict[str, float] = field(default_factory=dict)
    agent_key: str | None = None
    admission: dict[str, Any] = field(default_factory=dict)  # unit key -> limits (see _admission)
    durations: dict[str, float] = field(default_factory=dict)  # unit key -> known seconds (see _estimates)
    held: dict[str, bytes] = field(default_factory=dict)  # unit key -> retry policy held on the scheduler (heldretry)

    @property
    def keys(self) -> list[str]:
        """The unit keys (the futures a run holds)."""
        return list(self.units)

    @classmethod
    def merge(cls, parts: list[Compiled]) -> Compiled:
        """One graph for several runs (their keys never collide: each holds its run id).  Node
        locations are per run and are not merged."""
        if len(parts) == 1:
            return parts[0]
        merged = cls({}, {}, {})
        for c in parts:
            merged.dsk.update(c.dsk)
            merged.units.update(c.units)
            merged.retries.update(c.retries)
            merged.priority.update(c.priority)
            merged.admission.update(c.admission)
            merged.durations.update(c.durations)
            merged.held.update(c.held)
        return merged

    def graph(self) -> HighLevelGraph:
        """The graph as one HighLevelGraph layer with per-key annotations."""
        annotations: dict[str, Any] = {}
        if self.retries:
            annotations["retries"] = _Lookup(self.retries, 0)
        if self.priority:
            annotations["priority"] = _Lookup(self.priority, 0)
        if self.admission:
            annotations[ADMISSION] = _Lookup(self.admission, None)
        if self.held:
            annotations[RETRY_ANNOTATION] = _Lookup(self.held, None)
        layer = MaterializedLayer(self.dsk, annotations=annotations or None)
        return HighLevelGraph({"cleo": layer}, {"cleo": set()})


_NO_OVERRIDE: Mapping[str, Any] = {}
_NO_KWARGS: dict[str, Any] = {}   # shared by every task: never written to (Dask copies it for a new task)


class _Lookup:
    """A picklable ``key -> value`` callable for per-key annotations (Dask calls it per key)."""

    def __init__(self, table: Mapping[str, Any], default: Any):
        self.table = dict(table)
        self.default = default

    def __call__(self, key: str) -> Any:
        return self.table.get(key, self.default)


def fusable(parent: Node, child: Node, children: Mapping[str, list[str]], defaults: Defaults) -> bool:
    """Whether ``child`` may run in the same Dask task right after ``parent``."""
    if len(children[parent.name]) != 1 or len(child.parents) != 1:
        return False
    return _fusable_tasks(parent, child, defaults)


def _fusable_tasks(parent: Node, child: Node, defaults: Defaults) -> bool:
    a, b = parent.task, child.task
    if a.is_async != b.is_async or a.io_bound != b.io_bound or a.rate_limit or b.rate_limit or signal_of(a) or signal_of(b):
        return False
    # any retry (Dask's own, or the engine's ``Client.retry`` after a backoff) reruns the whole
    # Dask task, so only nodes without retries are fused
    return retry_policy(parent, defaults).retries == 0 and retry_policy(child, defaults).retries == 0


def child_counts(wf: Workflow) -> Counter:
    """How many children each node has (nodes without children are absent)."""
    return Counter(chain.from_iterable(map(attrgetter("parents"), wf.nodes.values())))


def plan_units(wf: Workflow, names: Iterable[str], defaults: Defaults, fuse: bool = True,
               counts: Mapping[str, int] | None = None) -> list[list[str]]:
    """Group ``names`` (a topologically ordered subset) into units of linear runs."""
    return [list(unit) for unit in unit_plan(wf, names, defaults, fuse, counts)]


def unit_plan(wf: Workflow, names: Iterable[str], defaults: Defaults,
              fuse: bool = True, counts: Mapping[str, int] | None = None) -> list[tuple[str, ...] | list[str]]:
    """:func:`plan_units` as compiling uses it: a unit that cannot grow (its last node has no only
    child) is a tuple, kept as is in :attr:`Compiled.units` (a million nodes: no list made and
    dropped per node, which would leave its memory scattered among what is kept)."""
    nodes = wf.nodes
    if not fuse:
        return [(n,) for n in names]
    once = (child_counts(wf) if counts is None else counts).get   # (compared with 1: only an only child's parent can be fused with it)
    unit_of: dict[str, list[str]] = {}   # an only child's parent -> its unit
    units: list[tuple[str, ...] | list[str]] = []
    append = units.append
    for n in names:
        parents = nodes[n].parents
        if len(parents) == 1:
            p = parents[0]
            unit = unit_of.get(p)
            if unit is not None and unit[-1] == p and _fusable_tasks(nodes[p], nodes[n], defaults):
                unit.append(n)
                if once(n) == 1:
                    unit_of[n] = unit
                continue
        if once(n) == 1:
            unit_of[n] = unit = [n]
            append(unit)
        else:
            append((n,))
    return units


@gc_paused()
def compile_workflow(wf: Workflow, run_id: str, agent: Any, *, defaults: Defaults = Defaults(),
                     priority: float = 0, fuse: bool = True,
                     critical_path: bool | Mapping[str, float] | None = None,
                     inputs: Mapping[str, Any] | None = None, not_before: float | None = None,
                     durations: Mapping[str, float] | None = None, names: Iterable[str] | None = None,
                     external: Mapping[str, tuple[str, int]] | None = None, fail_fast: bool = False,
                     slots: int | None = None, counts: Mapping[str, int] | None = None,
                     sinks_apart: bool = False, levels: Mapping[str, float] | None = None,
                     learned: Mapping[str, float] | None = None) -> Compiled:
    """Compile every node of ``wf`` for run ``run_id``; ``agent`` is embedded once.

    ``names``: compile only these nodes (a topologically ordered subset: one window of a big run,
    see :mod:`cleo_dask.runs.windows`); their parents outside it are read from ``external``
    (node -> the Dask key holding its output, and its index in that key's unit or -1).
    ``durations``: task name -> seconds measured (earlier in the run, or in earlier runs): with
    declared ``duration`` options they tell which tasks are short enough to run in batches
    (:mod:`cleo_dask.core.batching`, settings ``cleo_dask.batch.*``); ``slots``: the cluster's
    worker threads (each generation is split into at least that many batches; default
    ``cleo_dask.batch.min-batches``); ``fail_fast``: the run's (a batch applies it to its nodes'
    final failures); ``counts``: :func:`child_counts` of ``wf``, when the caller has it (the
    windows of one run: worked out once, not per window); ``sinks_apart``: sinks are batched
    apart from the rest of their generation (a windowed run releases what no child needs, never a sink);
    ``levels``: the bottom levels of ``wf`` for ``critical_path``, when worked out already (windows).

    ``not_before``: epoch seconds before which the run's root units are held on the scheduler
    (holding no slot; see :mod:`cleo_dask.admission.plugin`): scheduled runs handed over ahead of time.

    ``inputs``: the run's inputs (the workflow parameters' values), handed to every node taking some.
    ``critical_path``: prioritise by bottom level (default: when any task declares a ``duration``);
    a mapping ``node -> seconds`` does so with those estimated durations (e.g. an earlier run's).
    ``learned``: ``node -> seconds`` measured in earlier runs (:mod:`cleo_dask.core.durations`), used
    where no ``duration`` is declared: for batching (a node known short is batched like one declared
    short), and for priorities and Dask's estimates unless ``critical_path`` is a mapping or ``False``.
    """
    compiled = Compiled({}, {}, {})
    literals = {"inputs": NodeOutput(dict(inputs), "succeeded")} if inputs else {}
    batching = (_Batching(BatchSettings.from_config(), durations, fail_fast, slots, sinks_apart, learned)
                if fuse else None)
    _add_units(compiled, wf, list(wf.nodes) if names is None else list(names), run_id, agent, defaults, fuse,
               gen=0, literals=literals, external=external or {}, overrides={}, batching=batching, counts=counts)
    if not_before is not None:
        for key, names in compiled.units.items():
            if not wf.nodes[names[0]].parents:
                compiled.admission[key] = with_not_before(compiled.admission.get(key), not_before)
    mark_signals(compiled, wf, run_id)   # signal nodes: held on the scheduler until their signal
    set_priorities(compiled, wf, priority, critical_path, learned, levels)
    return compiled


def compile_resubmission(wf: Workflow, run_id: str, agent: Any, names: Iterable[str], gen: int, *,
                         defaults: Defaults, external: Mapping[str, tuple[str, int]],
                         literals: Mapping[str, NodeOutput], overrides: Mapping[str, dict[str, Any]],
                         priority: float = 0, inputs: Mapping[str, Any] | None = None) -> Compiled:
    """Compile a subset of nodes again under new keys (generation ``gen``), for the slow path.

    Parents outside the subset come from ``external`` (their current key and index) or, when
    their output is known on the client, from ``literals`` (embedded as data).  ``overrides``
    sets per-node ``attempt``, ``mode`` ("fallback") and ``error``.  ``inputs``: the run's inputs
    (the workflow parameters' values).
    """
    compiled = Compiled({}, {}, {})
    lit = {}
    for name, out in literals.items():
        key = f"{name}-{run_id}-v{gen}"
        compiled.dsk[key] = data_node(key, out)
        lit[name] = key
    _add_units(compiled, wf, list(names), run_id, agent, defaults, fuse=False, gen=gen,
               literals={"inputs": NodeOutput(dict(inputs), "succeeded")} if inputs else {},
               external={**external, **{n: (k, -1) for n, k in lit.items()}}, overrides=overrides)
    mark_signals(compiled, wf, run_id)
    if priority:
        compiled.priority = {k: priority for k in compiled.units}
    return compiled


def _add_units(compiled: Compiled, wf: Workflow, names: list[str], run_id: str, agent: Any,
               defaults: Defaults, fuse: bool, gen: int, literals: Mapping[str, NodeOutput],
               external: Mapping[str, tuple[str, int]], overrides: Mapping[str, dict[str, Any]],
               batching: _Batching | None = None, counts: Mapping[str, int] | None = None) -> None:
    nodes = wf.nodes
    agent_arg = graph_value(agent)   # the agent itself, unless its class is sent by value
    for lit_key, out in literals.items():
        compiled.dsk[f"{lit_key}-{run_id}"] = data_node(f"{lit_key}-{run_id}", out)
    # the run's inputs travel as one data node, handed to each node taking some of them
    inputs_key = f"inputs-{run_id}" if "inputs" in literals else None
    input_names = tuple(literals["inputs"].value) if inputs_key else ()
    limited = getattr(agent, "max_concurrency", None) is not None
    store = defaults.store
    location, dsk, units = compiled.location, compiled.dsk, compiled.units
    mid, suffix = f"-{run_id}-", (f"-{gen}" if gen else "")
    policies: dict[int, tuple[TaskSpec, RetryPolicy]] = {}   # id(spec) -> (spec, kept alive; its policy)
    refs: dict[str, TaskRef] = {}   # one reference per unit, shared by the units depending on it
    ref_of: dict[str, TaskRef] = {}   # node of a single-node unit -> the reference to its unit
    tail_of: dict[str, tuple[TaskRef, int]] = {}   # last node of a multi-node unit -> (reference, index)
    parent_ref = ref_of.__getitem__
    plain = _PlainUnits(compiled, run_id, agent_arg, store, agent, limited, defaults)
    units_planned, batch_at = _plan(wf, names, defaults, fuse, batching, limited, counts)
    for u, unit in enumerate(units_planned):
        is_batch = bool(batch_at) and u in batch_at
        if len(unit) == 1 and not is_batch:
            n = unit[0]
            node = nodes[n]
            if (not overrides or n not in overrides) and not (inputs_key and receives_inputs(node, input_names)) \
                    and not isinstance(node, ItemNode):
                try:
                    parent_refs, indexes = tuple(map(parent_ref, node.parents)), None
                except KeyError:   # a parent at the end of a multi-node unit, or from an earlier generation
                    parent_refs, indexes = _tail_refs(node.parents, ref_of, tail_of)
                if parent_refs is not None:
                    ref_of[n] = plain.add(node, f"{node.task.name}{mid}{n}{suffix}", parent_refs, unit, indexes)
                    continue
        # Dask groups tasks by the key's prefix (``key_split``: the words before the run id), so
        # the prefix is the *task's* name: one group per function, as the dashboard shows them,
        # rather than one per node (10,000 prefixes slow the scheduler's duration estimates).
        first = nodes[unit[0]]
        key = f"{'batch' if is_batch else first.task.name}{mid}{unit[0]}{suffix}"
        deps: list[str] = []
        dep_pos: dict[str, int] = {}
        calls = []
        for i, n in enumerate(unit):
            node = first if i == 0 else nodes[n]
            ins = []
            for p in node.parents:
                if i > 0 and p == unit[i - 1]:
                    ins.append((p, -1, i - 1))
                    continue
                pkey, idx = location.get(p) or external[p]
                pos = dep_pos.get(pkey)
                if pos is None:
                    pos = dep_pos[pkey] = len(deps)
                    deps.append(pkey)
                ins.append(node.input(pos, idx) if isinstance(node, ItemNode) else (p, pos, idx))
            if inputs_key and receives_inputs(node, input_names):
                if inputs_key not in dep_pos:
                    dep_pos[inputs_key] = len(deps)
                    deps.append(inputs_key)
                ins.append(("**", dep_pos[inputs_key], -1))   # last: the worker unpacks it
            over = overrides.get(n) if overrides else None
            if over is None:
                calls.append(NodeCall(n, node.task, tuple(ins), node.when, node.trigger))
                continue
            task = node.task if over.get("mode") != "fallback" else node.task.fallback
            calls.append(NodeCall(n, task, tuple(ins), node.when, node.trigger, over.get("attempt", 1),
                                  over.get("mode", "task"), over.get("error")))
        if is_batch:
            _add_batch(compiled, key, unit, calls, deps, refs, run_id, agent_arg, store, batching, defaults, nodes)
            continue
        # I/O units (async, or io_bound) run on the worker's event loop and free their slot
        head = calls[0].task
        func = run_unit_async if head.is_async or head.io_bound else run_unit
        dsk[key] = t = Task(key, func, UnitCall(run_id, key, tuple(calls), store), agent_arg,
                            *[refs.get(d) or _new_ref(refs, d) for d in deps])
        t.kwargs = _NO_KWARGS   # rather than an empty dict of its own per task (64 bytes a node)
        units[key] = tuple(unit)
        if limited or head.rate_limit is not None or (len(calls) > 1 and any(c.task.rate_limit for c in calls)):
            if (limits := unit_admission([c.task for c in calls], agent)) is not None:
                compiled.admission[key] = limits
        if len(unit) == 1:
            location[unit[0]] = (key, -1)
            ref_of[unit[0]] = refs.get(key) or _new_ref(refs, key)
            spec = first.task
            hit = policies.get(id(spec))
            if hit is None or hit[0] is not spec:
                hit = policies[id(spec)] = (spec, retry_policy(first, defaults))
            if overrides.get(unit[0], _NO_OVERRIDE).get("mode", "task") == "task":
                if hit[1].uses_dask_retries:
                    compiled.retries[key] = hit[1].retries
                elif (blob := retry_annotation(hit[1])) is not None:
                    compiled.held[key] = blob
        else:
            for i, n in enumerate(unit):
                location[n] = (key, i)
            tail_of[unit[-1]] = (refs.get(key) or _new_ref(refs, key), len(unit) - 1)   # (only it has other children)


@dataclass(frozen=True)
class _Batching:
    settings: BatchSettings
    durations: Mapping[str, float] | None
    fail_fast: bool
    slots: int | None
    sinks_apart: bool = False
    learned: Mapping[str, float] | None = None   # node -> seconds in earlier runs


def _plan(wf: Workflow, names: list[str], defaults: Defaults, fuse: bool, batching: _Batching | None,
          limited: bool, counts: Mapping[str, int] | None = None) -> tuple[list, set[int]]:
    """The units of ``names`` (fused chains, batches when ``batching``) and which are batches."""
    if batching is None or limited:
        return unit_plan(wf, names, defaults, fuse, counts), set()
    nodes, s = wf.nodes, batching.settings
    verdict: dict[tuple, bool] = {}   # per task spec (and its policy): most nodes share a few tasks

    learned = batching.learned

    def is_eligible(n: str) -> bool:
        node = nodes[n]
        seconds = learned.get(n) if learned and node.task.duration is None else None   # this node's own past
        key = (id(node.task), None if seconds is None else seconds <= s.max_duration)   # a node's policy is its task's
        if key not in verdict:
            verdict[key] = eligible(node.task, retry_policy(node, defaults), s, batching.durations, seconds=seconds)
        return verdict[key]

    if not any(map(is_eligible, names)):
        return unit_plan(wf, names, defaults, fuse, counts), set()
    parents = {n: nodes[n].parents for n in names}
    counts = child_counts(wf) if counts is None else counts
    has_kids = counts.__contains__
    return batch_units(plan_units(wf, names, defaults, fuse, counts), names, parents, is_eligible, max_nodes=s.max_nodes,
                       slots=batching.slots or s.min_batches,
                       sink=(lambda n: not has_kids(n)) if batching.sinks_apart else None)


def _add_batch(compiled: Compiled, key: str, unit: list[str], calls: list[NodeCall], deps: list[str],
               refs: dict[str, TaskRef], run_id: str, agent_arg: Any, store: Any, batching: _Batching,
               defaults: Defaults, nodes: Mapping[str, Node]) -> None:
    policies = tuple(retry_policy(nodes[n], defaults) for n in unit)
    func = run_batch_async if any(c.task.is_async for c in calls) else run_batch
    call = BatchCall(run_id, key, tuple(calls), policies, store, batching.fail_fast)
    t = compiled.dsk[key] = Task(key, func, call, agent_arg, *[refs.get(d) or _new_ref(refs, d) for d in deps])
    t.kwargs = _NO_KWARGS
    compiled.units[key] = tuple(unit)
    location = compiled.location
    for i, n in enumerate(unit):
        location[n] = (key, i)


def _tail_refs(parents: tuple[str, ...], ref_of: Mapping[str, TaskRef], tail_of: Mapping[str, tuple[TaskRef, int]]
               ) -> tuple[tuple[TaskRef, ...] | None, tuple[int, ...] | None]:
    """The parents' references and their indexes in their units' outputs (``-1``: a single-node
    unit's whole output), when each parent's unit was compiled here; else ``(None, None)``.  Only
    the last node of a fused run has children outside it, so the parents' units are distinct."""
    refs, indexes = [], []
    for p in parents:
        ref = ref_of.get(p)
        if ref is not None:
            refs.append(ref)
            indexes.append(-1)
        elif (tail := tail_of.get(p)) is not None:
            refs.append(tail[0])
            indexes.append(tail[1])
        else:
            return None, None
    return tuple(refs), tuple(indexes)


class _PlainUnits:
    """Adds single-node units whose dependencies are their node's parents' units, in order (the
    commonest unit, held as a :class:`PlainUnit`), with as little work per node as possible."""

    def __init__(self, compiled: Compiled, run_id: str, agent_arg: Any, store: Any, agent: Any, limited: bool,
                 defaults: Defaults):
        self.compiled, self.run_id, self.agent_arg, self.store = compiled, run_id, agent_arg, store
        self.agent, self.limited, self.defaults = agent, limited, defaults
        self.dsk, self.units, self.location = compiled.dsk, compiled.units, compiled.location
        self.spec: Any = None          # the last node's task, and what follows from it:
        self.func: Any = None          # the Dask task function,
        self.retries = 0               # Dask's immediate retries,
        self.admitted = False          # whether admission limits may apply
        self.held: bytes | None = None  # its retry policy if its retries are held on the scheduler

    def add(self, node: Node, key: str, parent_refs: tuple[TaskRef, ...], unit: Any,
            indexes: tuple[int, ...] | None = None) -> TaskRef:
        """Add ``node`` (``unit``: its one name) under ``key``; return the reference to its key.
        ``indexes``: each parent's index in its unit's output (``None``: all ``-1``)."""
        spec = node.task
        if spec is not self.spec:      # (a big graph: mostly runs of nodes sharing one task)
            self._new_spec(node)
        unit_call = (PlainUnit(self.run_id, key, node, self.store) if indexes is None
                     else IndexedPlainUnit(self.run_id, key, node, self.store, indexes))
        self.dsk[key] = t = Task(key, self.func, unit_call, self.agent_arg, *parent_refs)
        t.kwargs = _NO_KWARGS
        name = node.name
        self.units[key] = tuple(unit)   # (the plan's own tuple, unless a list)
        self.location[name] = (key, -1)
        if self.retries:
            self.compiled.retries[key] = self.retries
        elif self.held is not None:
            self.compiled.held[key] = self.held
        if self.admitted and (limits := unit_admission([spec], self.agent)) is not None:
            self.compiled.admission[key] = limits
        return TaskRef(key)

    def _new_spec(self, node: Node) -> None:
        spec = self.spec = node.task
        self.func = run_unit_async if spec.is_async or spec.io_bound else run_unit
        policy = retry_policy(node, self.defaults)
        self.retries = policy.retries if policy.uses_dask_retries else 0
        self.held = retry_annotation(policy)
        self.admitted = self.limited or spec.rate_limit is not None


def _new_ref(refs: dict[str, TaskRef], key: str) -> TaskRef:
    ref = refs[key] = TaskRef(key)
    return ref
