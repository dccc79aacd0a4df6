"""Batches: many short independent nodes run as one Dask task, each node keeping its own outcome."""
from __future__ import annotations

import asyncio
import builtins
import random
import threading
import time

import dask
import pytest

import cleo_dask as cd
from cleo_dask.core.batching import BatchSettings, batch_units, eligible, generations, group_batches, split
from cleo_dask.core.compile import Defaults, compile_workflow, retry_policy
from cleo_dask.runs.stranded import stranded

# Tasks travel to the (in-process) workers by value, each submission with copies of this module's
# globals: counters live in one place of the process instead (builtins is pickled by reference).
_SHARED = builtins.__dict__.setdefault("_cleo_test_batches", {"calls": {}, "spans": {}, "errors": [],
                                                              "lock": threading.Lock()})
CALLS: dict[tuple[str, str], int] = _SHARED["calls"]
SPANS: dict[str, tuple[float, float]] = _SHARED["spans"]
ERRORS: list[tuple[str, str]] = _SHARED["errors"]
FORCE = {"cleo_dask.batch.force": True}


def _count(tag: str, name: str) -> int:
    shared = builtins.__dict__["_cleo_test_batches"]
    with shared["lock"]:
        calls = shared["calls"]
        calls[(tag, name)] = n = calls.get((tag, name), 0) + 1
    return n


class Step:
    """Counts its executions; fails its first ``fails`` attempts; returns its index plus the
    numeric inputs (a failed parent counts -7)."""

    def __init__(self, tag: str, name: str, index: int, fails: int = 0):
        self.tag, self.name, self.index, self.fails = tag, name, index, fails

    def run(self, agent, **inputs):
        n = _count(self.tag, self.name)
        if n <= self.fails:
            raise ConnectionError(f"{self.name} attempt {n}")
        return self.index + sum(_num(v) for v in inputs.values())


class AsyncStep:
    """An async node: sleeps a little, remembers when it ran."""

    def __init__(self, tag: str, name: str):
        self.tag, self.name = tag, name

    async def run(self, agent, **inputs):
        _count(self.tag, self.name)
        start = time.time()
        await asyncio.sleep(0.2)
        builtins.__dict__["_cleo_test_batches"]["spans"][f"{self.tag}-{self.name}"] = (start, time.time())
        return self.name


class Fallback:
    def __init__(self, index: int):
        self.index = index

    def run(self, agent, error, **inputs):
        return 1000 + self.index


class Cond:
    """``when``: the numeric inputs' sum is not a multiple of 3."""

    def __call__(self, **inputs):
        return sum(_num(v) for v in inputs.values()) % 3 != 0


def _num(v):
    if isinstance(v, cd.Failure):
        return -7
    return v if isinstance(v, int) else 0


def _notify(agent, name, error):   # (on the client)
    ERRORS.append((name, type(error).__name__))


def _tag() -> str:
    return f"t{time.time_ns()}"


def _batches(run) -> list[tuple[str, ...]]:
    return [names for key, names in run._units.items() if key.startswith("batch-")]


# -- pure: eligibility and grouping ------------------------------------------------------------
def _spec(**options):
    return cd.task(lambda agent: 1, name="t", **options).spec


def test_eligibility_needs_a_short_known_duration_unless_forced():
    policy = retry_policy(type("N", (), {"task": _spec()})(), Defaults())
    plain = BatchSettings()
    assert not eligible(_spec(), policy, plain)                        # unknown: not batched
    assert eligible(_spec(duration=0.001), policy, plain)              # declared short
    assert not eligible(_spec(duration=5), policy, plain)              # declared long
    assert eligible(_spec(), policy, plain, {"t": 0.002})              # measured short (task name)
    assert not eligible(_spec(duration=0.001), policy, plain, {"t": 3.0})  # measured wins
    assert eligible(_spec(), policy, BatchSettings(force=True))


@pytest.mark.parametrize("options", [dict(rate_limit="5/s"), dict(io_bound=True), dict(batch=False)])
def test_admission_limits_and_opt_out_are_never_batched(options):
    spec = _spec(duration=0.001, **options)
    policy = retry_policy(type("N", (), {"task": spec})(), Defaults())
    assert not eligible(spec, policy, BatchSettings(force=True))


def test_an_agent_with_max_concurrency_gets_no_batches():
    wf = cd.Workflow("limited")
    for i in range(6):
        wf.add(Step("x", f"r{i}", i), name=f"r{i}")
    agent = cd.Agent("limited", max_concurrency=2)
    with dask.config.set(FORCE):
        compiled = compile_workflow(wf, "run1", agent)
    assert all(len(names) == 1 for names in compiled.units.values())


@pytest.mark.parametrize("options", [dict(retries=3, retry_on=(ConnectionError,)),
                                     dict(retries=2, backoff=cd.fixed(1)), dict(retries=2, backoff=cd.exponential())])
def test_retries_are_batched_immediate_or_waiting(options):
    spec = _spec(**options)
    assert eligible(spec, retry_policy(type("N", (), {"task": spec})(), Defaults()), BatchSettings(force=True))


def test_generations_and_grouping():
    parents = {"a": [], "b": [], "c": ["a"], "d": ["a", "b"], "e": ["c", "d"], "f": []}
    order = list(parents)
    assert generations(order, parents) == {"a": 0, "b": 0, "c": 1, "d": 1, "e": 2, "f": 0}
    # at least `slots` batches per generation, at most max_nodes nodes each
    assert group_batches(order, parents, order, max_nodes=10, slots=2) == [["a", "b"], ["f"], ["c"], ["d"], ["e"]]
    assert group_batches(order, parents, order, max_nodes=2, slots=1) == [["a", "b"], ["f"], ["c", "d"], ["e"]]
    assert split(list("abcdefg"), 3) == [list("abc"), list("de"), list("fg")]


def _noop(agent, **parents):
    return None


def test_sinks_are_batched_apart_from_the_nodes_their_generation_feeds():
    """A unit holding a sink is kept to the run's end (its value is the result): in a windowed
    run the rest of its generation goes in other batches, which can be released."""
    parents = {"a": [], "b": [], "s1": [], "s2": [], "c": ["a", "b"]}
    order = list(parents)
    sink = {"s1", "s2", "c"}.__contains__
    assert group_batches(order, parents, order, max_nodes=10, slots=1, sink=sink) == [["a", "b"], ["s1", "s2"], ["c"]]
    wf = cd.Workflow("sinks-apart")
    for i in range(6):
        wf.add(_noop, name=f"r{i}")
    for i in range(3):
        wf.add(_noop, name=f"c{i}", after=[f"r{i}", f"r{i + 1}"])
    with dask.config.set({**FORCE, "cleo_dask.batch.min-batches": 1}):
        compiled = compile_workflow(wf, "run1", cd.Agent("a"), sinks_apart=True)   # as windows compile
        mixed = compile_workflow(wf, "run1", cd.Agent("a"))   # one graph: nothing released before the end
    assert sorted(compiled.units.values()) == [("c0", "c1", "c2"), ("r0", "r1", "r2", "r3"), ("r4", "r5")]
    assert sorted(mixed.units.values()) == [("c0", "c1", "c2"), ("r0", "r1", "r2", "r3", "r4", "r5")]


def test_batch_units_keep_chains_and_order_units_after_their_dependencies():
    # a -> c1 -> c2 (a chain), b and d independent roots, e below c2 and d
    parents = {"a": [], "b": [], "d": [], "c1": ["a"], "c2": ["c1"], "e": ["c2", "d"]}
    order = ["a", "b", "c1", "c2", "d", "e"]
    units = [["a"], ["b"], ["c1", "c2"], ["d"], ["e"]]
    out, batch_at = batch_units(units, order, parents, lambda n: n != "c1" and n != "c2", max_nodes=10, slots=1)
    assert out == [["a", "b", "d"], ["c1", "c2"], ["e"]] and batch_at == {0}
    # a chain of eligible nodes is cut: they join the batches of their generations
    out, batch_at = batch_units(units, order, parents, lambda n: True, max_nodes=10, slots=1)
    assert out == [["a", "b", "d"], ["c1"], ["c2"], ["e"]] and batch_at == {0}
    seen: set[str] = set()
    for u in out:   # every parent is in an earlier unit or earlier in the same chain
        for n in u:
            assert all(p in seen or p in u[:u.index(n)] for p in parents[n])
        seen.update(u)


def test_stranded_nodes_share_an_erred_batch_with_a_failure_s_descendants():
    units = {"k1": ("p",), "k2": ("x", "y"), "k3": ("z",), "k4": ("w",)}
    location = {"p": ("k1", -1), "x": ("k2", 0), "y": ("k2", 1), "z": ("k3", -1), "w": ("k4", -1)}
    below = {"p": ["x"], "x": [], "y": ["z"], "z": [], "w": []}

    def descendants(names):
        out, stack = [], list(names)
        while stack:
            for c in below[stack.pop()]:
                out.append(c)
                stack.append(c)
        return out

    assert stranded({"p", "x"}, units, location, set(), descendants) == {"p", "x", "y", "z"}
    assert stranded({"p", "x"}, units, location, {"y"}, descendants) == {"p", "x"}


def test_batch_option_is_checked_and_read_from_spec_files():
    with pytest.raises(cd.WorkflowError, match="batch must be True or False"):
        cd.task(lambda agent: 1, batch="no")
    assert cd.task(lambda agent: 1, batch=False).spec.batch is False
    from cleo_dask.core.options import FILE_OPTIONS, TASK_OPTIONS
    assert "batch" in TASK_OPTIONS and "batch" in FILE_OPTIONS


# -- on a cluster ----------------------------------------------------------------------------------
def test_a_batch_holds_sync_and_async_nodes_the_async_ones_run_concurrently(engine, agent):
    tag = _tag()
    wf = cd.Workflow("mixed")
    for i in range(3):
        wf.add(Step(tag, f"s{i}", i), name=f"s{i}")
        wf.add(AsyncStep(tag, f"a{i}"), name=f"a{i}")
    with dask.config.set({**FORCE, "cleo_dask.batch.min-batches": 1}):
        run = engine.submit(wf, agent)
    assert _batches(run) == [("s0", "a0", "s1", "a1", "s2", "a2")]
    out = run.result(timeout=60)
    assert out.ok and out["s2"].value == 2 and out["a1"].value == "a1"
    assert all(CALLS[(tag, n)] == 1 for n in out)
    spans = [SPANS[f"{tag}-a{i}"] for i in range(3)]
    assert max(s for s, _ in spans) < min(e for _, e in spans)   # all three were sleeping at once


def test_a_failing_node_in_a_batch_fails_alone(engine, agent):
    """Its siblings and their descendants run exactly once; its own retries rerun only it;
    trigger rules below it hold; on_error is called once; the run fails."""
    tag = _tag()
    ERRORS.clear()
    wf = cd.Workflow("one-bad")
    for i in range(4):
        opts = dict(retries=2, retry_on=(ConnectionError,), on_error=_notify) if i == 1 else {}
        wf.add(Step(tag, f"r{i}", i, fails=99 if i == 1 else 0), name=f"r{i}", **opts)
    for i in range(4):
        wf.add(Step(tag, f"c{i}", 10 + i), name=f"c{i}", after=[f"r{i}"])
    wf.add(Step(tag, "done", 20), name="done", after=["r1", "r2"], trigger="all_done")
    wf.add(Step(tag, "alarm", 30), name="alarm", after=["r1", "r3"], trigger="one_failed")
    with dask.config.set({**FORCE, "cleo_dask.batch.min-batches": 1}):
        run = engine.submit(wf, agent)
    assert ("r0", "r1", "r2", "r3") in _batches(run)
    out = run.result(timeout=60)
    assert out["r1"].status == "failed" and isinstance(out["r1"].error, ConnectionError)
    assert [a.error is not None for a in out["r1"].attempts] == [True, True, True]
    assert "ConnectionError" in out["r1"].traceback
    assert out["c1"].status == "upstream_failed" and "'r1'" in out["c1"].reason
    assert {n: out[n].status.value for n in ("r0", "r2", "r3", "c0", "c2", "c3")} == dict.fromkeys(
        ("r0", "r2", "r3", "c0", "c2", "c3"), "succeeded")
    assert out["done"].value == 20 - 7 + 2 and out["alarm"].value == 30 - 7 + 3
    assert CALLS[(tag, "r1")] == 3
    assert all(CALLS[(tag, n)] == 1 for n in out if n not in ("r1", "c1"))
    assert (tag, "c1") not in CALLS
    assert ERRORS == [("r1", "ConnectionError")]
    assert run.status() == "failed" and out.counts() == {"succeeded": 8, "failed": 1, "upstream_failed": 1}


def test_a_batched_node_retries_and_falls_back_inline(engine, agent):
    tag = _tag()
    wf = cd.Workflow("inline")
    wf.add(Step(tag, "flaky", 1, fails=1), name="flaky", retries=1)
    wf.add(Step(tag, "doomed", 2, fails=99), name="doomed", retries=1, fallback=Fallback(2))
    wf.add(Step(tag, "plain", 3), name="plain")
    wf.add(Step(tag, "skipme", 4), name="skipme", after=["plain"], when=Cond())  # 3 % 3 == 0: skipped
    with dask.config.set(FORCE):
        run = engine.submit(wf, agent)
    out = run.result(timeout=60)
    assert out["flaky"].status == "succeeded" and [a.error is None for a in out["flaky"].attempts] == [False, True]
    assert out["doomed"].status == "fell_back" and out["doomed"].value == 1002
    assert [a.kind for a in out["doomed"].attempts] == ["task", "task", "fallback"]
    assert isinstance(out["doomed"].error, ConnectionError)
    assert out["skipme"].status == "skipped" and (tag, "skipme") not in CALLS
    assert run.status() == "succeeded"


def test_a_batched_retry_waits_after_its_siblings_without_holding_a_slot(engine, agent):
    # 2 slots: the batch parks ``flaky`` for its 1 s backoff, runs ``a`` and ``b``, and waits outside
    # the pool, so the four 0.3 s tasks use both slots meanwhile
    tag = _tag()
    wf = cd.Workflow("parked")
    wf.add(Step(tag, "flaky", 1, fails=1), name="flaky", retries=1, backoff=cd.fixed(1.0), retry_on=ConnectionError)
    siblings = [f"s{i}" for i in range(6)]
    for i, name in enumerate(siblings):
        wf.add(Step(tag, name, 2 + i), name=name, retries=1, backoff=cd.fixed(1.0))
    for i in range(4):
        wf.add(lambda agent: (time.time(), time.sleep(0.3))[0], name=f"work{i}", batch=False)
    wf.add(Step(tag, "below", 10), name="below", after=["flaky", "s0"])
    t0 = time.time()
    with dask.config.set(FORCE):
        run = engine.submit(wf, agent)
    assert len(run._units[run._location["flaky"][0]]) > 1   # batched with siblings
    out = run.result(timeout=60)
    assert out["below"].value == 10 + 1 + 2 and out["flaky"].value == 1
    assert [a.error is None for a in out["flaky"].attempts] == [False, True]
    assert out["flaky"].attempts[1].start - out["flaky"].attempts[0].end >= 1.0
    assert [CALLS[(tag, n)] for n in ("flaky", *siblings, "below")] == [2] + [1] * 6 + [1]
    starts = sorted(out[f"work{i}"].value - t0 for i in range(4))
    assert starts[-1] < out["flaky"].attempts[1].start - t0 - 0.3   # done on two slots during the wait


def test_fail_fast_with_a_batched_failure_cancels_the_rest(engine, agent):
    tag = _tag()
    wf = cd.Workflow("ff")
    for i in range(4):
        wf.add(Step(tag, f"r{i}", i, fails=99 if i == 0 else 0), name=f"r{i}")
        wf.add(Step(tag, f"c{i}", i), name=f"c{i}", after=[f"r{i}"])
    wf.add(Step(tag, "end", 9), name="end", after=[f"r{i}" for i in range(4)], trigger="all_done")
    with dask.config.set({**FORCE, "cleo_dask.batch.min-batches": 1}):
        run = engine.submit(wf, agent, fail_fast=True)
    assert _batches(run)[0] == ("r0", "r1", "r2", "r3")
    out = run.result(timeout=60)
    assert out["r0"].status == "failed" and isinstance(out["r0"].error, ConnectionError)
    assert run.status() == "failed"
    assert all(out[f"r{i}"].status == "succeeded" for i in (1, 2, 3))   # ran in the batch already
    # nothing below the failure started (the batch erred once its nodes ran); whether the rest ends
    # cancelled or failed below an erred key races with the cancel, as for nodes run alone
    assert (tag, "end") not in CALLS and out["end"].status in ("cancelled", "failed")


def test_batch_false_opts_out(engine, agent):
    tag = _tag()
    wf = cd.Workflow("optout")
    for i in range(4):
        wf.add(Step(tag, f"r{i}", i), name=f"r{i}", batch=i != 2)
    with dask.config.set({**FORCE, "cleo_dask.batch.min-batches": 1}):
        run = engine.submit(wf, agent)
    assert _batches(run) == [("r0", "r1", "r3")] and not run.futures["r2"].key.startswith("batch-")
    assert run.result(timeout=60).ok


def test_nodes_stranded_in_a_batch_by_an_unbatched_failure_run_once(engine, agent):
    """A node alone (batch=False) fails for good, after a retry that waits: the batch holding its
    child and unrelated nodes erred without running; they, and what is below them, run once."""
    tag = _tag()
    wf = cd.Workflow("stranded")
    wf.add(Step(tag, "p", 1, fails=99), name="p", batch=False, retries=1, backoff=cd.fixed(0.05))
    wf.add(Step(tag, "q", 2, fails=1), name="q", batch=False, retries=1, backoff=cd.fixed(0.05))
    for i in range(3):
        wf.add(Step(tag, f"r{i}", i), name=f"r{i}")
    wf.add(Step(tag, "x", 5), name="x", after=["p"])
    wf.add(Step(tag, "y", 6), name="y", after=["r0"])
    wf.add(Step(tag, "v", 7), name="v", after=["q", "r1"])
    wf.add(Step(tag, "z", 8), name="z", after=["y"])
    wf.add(Step(tag, "z2", 9), name="z2", after=["y"])
    wf.add(Step(tag, "w", 9), name="w", after=["r2"])
    wf.add(Step(tag, "all", 0), name="all", after=["r0", "r1", "r2"])   # (no chains r0-y, r2-w)
    with dask.config.set({**FORCE, "cleo_dask.batch.min-batches": 1}):
        run = engine.submit(wf, agent)
    assert ("x", "y", "v", "w", "all") in _batches(run)
    out = run.result(timeout=60)
    assert out["p"].status == "failed" and out["x"].status == "upstream_failed"
    assert out["q"].status == "succeeded" and len(out["q"].attempts) == 2
    assert {n: out[n].value for n in ("y", "v", "z", "w")} == {"y": 6, "v": 7 + 2 + 1, "z": 14, "w": 11}
    assert all(CALLS[(tag, n)] == 1 for n in ("r0", "r1", "r2", "y", "v", "z", "z2", "w", "all"))
    assert (tag, "x") not in CALLS


# -- the model: a big random DAG, batching forced on ------------------------------------------------
def build(seed: int, n: int, layer: int = 200):
    """A layered random DAG of ``n`` nodes with failures, retries (immediate, waiting ones in
    batches, and a few on unbatched nodes), fallbacks, conditions and every trigger rule; and its model."""
    rng = random.Random(seed)
    tag = _tag()
    wf = cd.Workflow(f"batch-model-{seed}")
    model = {}
    for i in range(n):
        name = f"n{i}"
        lo = (i // layer - 1) * layer
        pool = [f"n{j}" for j in range(max(0, lo), max(0, lo + layer))] if i >= layer else []
        parents = sorted(rng.sample(pool, k=rng.randint(1, 3))) if pool else []
        alone = rng.random() < 0.002   # run alone (the client's slow path for its failures)
        fails = rng.choice([0] * 30 + [1, 2, 5])
        retries = rng.choice([0, 1, 2])
        if alone and fails > retries:
            fails = 0 if rng.random() < 0.8 else fails   # few final failures outside batches
        trigger = rng.choice(["all_success"] * 6 + ["all_done", "one_failed"])
        fallback = Fallback(i) if rng.random() < 0.3 else None
        when = Cond() if rng.random() < 0.1 else None
        opts = {"retries": retries, "fallback": fallback, "retry_on": (ConnectionError,)}
        if alone:
            opts.update(batch=False, backoff=cd.fixed(0.01))
        elif rng.random() < 0.2:   # a batched node whose retries wait: parked while its batch runs on
            opts.update(backoff=cd.fixed(0.02))
        wf.add(Step(tag, name, i, fails), name=name, after=parents, trigger=trigger, when=when, **opts)
        model[name] = dict(parents=parents, fails=fails, retries=retries, trigger=trigger, when=when is not None,
                           fallback=fallback is not None, index=i)
    return wf, model, tag


def expected(model):
    """The plain-Python model of test_failure_model, with ``when`` conditions."""
    out = {}
    for name, m in model.items():
        ps = [(p, out[p]) for p in m["parents"]]
        statuses = [s for _, (s, _) in ps]
        if m["trigger"] == "all_success" and any(s in ("failed", "upstream_failed") for s in statuses):
            out[name] = ("upstream_failed", None)
            continue
        if m["trigger"] == "all_success" and "skipped" in statuses:
            out[name] = ("skipped", None)
            continue
        if m["trigger"] == "one_failed" and ps and "failed" not in statuses:
            out[name] = ("skipped", None)
            continue
        total = sum(-7 if s == "failed" else (0 if v is None else v) for _, (s, v) in ps)
        if m["when"] and total % 3 == 0:
            out[name] = ("skipped", None)
        elif m["fails"] <= m["retries"]:
            out[name] = ("succeeded", m["index"] + total)
        elif m["fallback"]:
            out[name] = ("fell_back", 1000 + m["index"])
        else:
            out[name] = ("failed", None)
    return out


def _check_against_model(engine, agent, seed, n):
    wf, model, tag = build(seed, n)
    with dask.config.set(FORCE):
        run = engine.submit(wf, agent)
    assert len(run._units) < n // 10   # batched
    out = run.result(timeout=600)
    want = expected(model)
    got = {k: (r.status.value, r.value if r.ok else None) for k, r in out.items()}
    assert got == want
    for k, m in model.items():
        status = want[k][0]
        ran = CALLS.get((tag, k), 0)
        if status == "succeeded":
            assert len(out[k].attempts) == m["fails"] + 1 == ran
        elif status == "fell_back":   # every attempt of the task, then the fallback's own run, marked
            assert [a.kind for a in out[k].attempts] == ["task"] * (m["retries"] + 1) + ["fallback"]
            assert ran == m["retries"] + 1 and out[k].error is not None
        elif status == "failed":      # every failed attempt named
            assert len(out[k].attempts) == ran == m["retries"] + 1
            assert all(a.error and "ConnectionError" in a.error for a in out[k].attempts)
        else:
            assert ran == 0
    assert run.status() == ("failed" if "failed" in {s for s, _ in want.values()} else "succeeded")


@pytest.mark.parametrize("seed", [11, 12])
def test_random_dag_batched_matches_the_model(engine, agent, seed):
    _check_against_model(engine, agent, seed, 1200)


@pytest.mark.slow
def test_random_dag_of_20000_nodes_batched_matches_the_model(engine, agent):
    _check_against_model(engine, agent, 17, 20000)


def test_a_durable_run_journals_batched_nodes(client, agent, tmp_path):
    tag = _tag()
    wf = cd.Workflow("durable-batch")
    for i in range(4):
        wf.add(Step(tag, f"r{i}", i, fails=99 if i == 1 else 0), name=f"r{i}")
    wf.add(Step(tag, "below", 9), name="below", after=["r0", "r1", "r2", "r3"])
    with cd.Engine(client=client, store=tmp_path / "runs.db") as engine:
        with dask.config.set({**FORCE, "cleo_dask.batch.min-batches": 1}):
            run = engine.submit(wf, agent)
        assert _batches(run) == [("r0", "r1", "r2", "r3")]
        out = run.result(timeout=60)
        assert engine.durable.wait_journaled(run.id)
        rows = engine.durable.journal.nodes(run.id)
        assert {n: rows[n].status for n in rows} == {"r0": "succeeded", "r1": "failed", "r2": "succeeded",
                                                     "r3": "succeeded", "below": "upstream_failed"}
        assert out["r2"].value == 2 and engine.runs(status="failed")[0].id == run.id


def test_cancelling_a_run_stops_its_batch_waiting_for_a_retry(engine, client, agent):
    tag = _tag()
    wf = cd.Workflow("parked-cancel")
    wf.add(Step(tag, "flaky", 1, fails=1), name="flaky", retries=1, backoff=cd.fixed(30.0))
    for i in range(4):
        wf.add(Step(tag, f"s{i}", 2 + i), name=f"s{i}")
    with dask.config.set(FORCE):
        run = engine.submit(wf, agent)
    assert len(run._units[run._location["flaky"][0]]) > 1
    deadline = time.time() + 10
    while CALLS.get((tag, "flaky"), 0) < 1 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    run.cancel()
    key = run._location["flaky"][0]
    out = run.result(timeout=10)
    assert out["flaky"].status == "cancelled"
    # the waiting batch noticed within a tick (0.25 s): its task is gone from the worker, whose
    # state keeps a cancelled task until its thread returns
    deadline = time.time() + 3
    while any(client.run(lambda dask_worker: key in dask_worker.state.tasks).values()):
        assert time.time() < deadline, "the batch still waits for its 30 s backoff"
        time.sleep(0.05)
    wf2 = cd.Workflow("after")
    wf2.add(Step(tag, "later", 7), name="later")
    assert engine.submit(wf2, agent).result(timeout=10)["later"].value == 7
    time.sleep(0.5)
    assert CALLS[(tag, "flaky")] == 1
