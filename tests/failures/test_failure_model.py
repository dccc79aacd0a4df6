"""Random workflows full of failures, checked against a plain-Python model of the same rules."""
from __future__ import annotations

import random
import threading
import time

import pytest

import cleo_dask as cd

CALLS: dict[tuple[str, str], int] = {}
LOCK = threading.Lock()


class Step:
    """Fails its first ``fails`` attempts, then returns its index plus the numeric inputs."""

    def __init__(self, tag, name, index, fails):
        self.tag, self.name, self.index, self.fails = tag, name, index, fails

    def run(self, agent, **inputs):
        with LOCK:
            CALLS[(self.tag, self.name)] = n = CALLS.get((self.tag, self.name), 0) + 1
        if n <= self.fails:
            raise ConnectionError(f"{self.name} attempt {n}")
        return self.index + sum(_num(v) for v in inputs.values())


class Fallback:
    def __init__(self, index):
        self.index = index

    def run(self, agent, error, **inputs):
        return 1000 + self.index


def _num(v):
    if isinstance(v, cd.Failure):
        return -7
    return 0 if v is None else v


def build(seed, n=60):
    rng = random.Random(seed)
    tag = f"{seed}-{time.time_ns()}"
    wf = cd.Workflow(f"model-{seed}")
    model = {}
    for i in range(n):
        name = f"n{i}"
        parents = sorted(rng.sample([f"n{j}" for j in range(max(0, i - 8), i)], k=min(i, rng.randint(0, 3))))
        fails = rng.choice([0, 0, 0, 1, 2, 5])
        retries = rng.choice([0, 1, 2])
        mode = rng.choice(["client", "dask"])
        trigger = rng.choice(["all_success"] * 4 + ["all_done", "one_failed"])
        fallback = Fallback(i) if rng.random() < 0.25 else None
        opts = {"retries": retries, "fallback": fallback}
        if mode == "client":
            opts.update(backoff=cd.fixed(0.01), retry_on=(ConnectionError,))
        wf.add(Step(tag, name, i, fails), name=name, after=parents, trigger=trigger, **opts)
        model[name] = dict(parents=parents, fails=fails, retries=retries, trigger=trigger,
                           fallback=fallback is not None, index=i)
    return wf, model


def expected(model):
    out = {}
    for name, m in model.items():
        ps = [(p, out[p]) for p in m["parents"]]
        statuses = [s for _, (s, _) in ps]
        if m["trigger"] == "all_success" and any(s in ("failed", "upstream_failed") for s in statuses):
            out[name] = ("upstream_failed", None)   # below a failure: a skip that says why
            continue
        if m["trigger"] == "all_success" and "skipped" in statuses:
            out[name] = ("skipped", None)
            continue
        # roots have no upstream to wait for; upstream_failed is a kind of skip, not a failure
        if m["trigger"] == "one_failed" and ps and "failed" not in statuses:
            out[name] = ("skipped", None)
            continue
        if m["fails"] <= m["retries"]:
            value = m["index"] + sum(-7 if s == "failed" else (0 if v is None else v) for _, (s, v) in ps)
            out[name] = ("succeeded", value)
        elif m["fallback"]:
            out[name] = ("fell_back", 1000 + m["index"])
        else:
            out[name] = ("failed", None)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_random_failing_workflows_match_the_model(engine, agent, seed):
    wf, model = build(seed)
    out = engine.submit(wf, agent).result(timeout=120)
    want = expected(model)
    got = {n: (r.status.value, r.value if r.ok else None) for n, r in out.items()}
    assert got == want
    for n, m in model.items():
        if want[n][0] == "succeeded":
            assert len(out[n].attempts) == m["fails"] + 1
        if want[n][0] == "fell_back":   # every attempt of the task, then the fallback's own run, marked
            assert [a.kind for a in out[n].attempts] == ["task"] * (m["retries"] + 1) + ["fallback"]
        if want[n][0] == "upstream_failed":   # the reason names an ancestor that failed
            origin = out[n].reason.split("'")[1]
            assert want[origin][0] == "failed" and origin in _ancestors(model, n)


def _ancestors(model, name):
    seen, stack = [], list(model[name]["parents"])
    while stack:
        p = stack.pop()
        if p not in seen:
            seen.append(p)
            stack.extend(model[p]["parents"])
    return seen
