"""Each benchmark of issue 5 (and issue 4's failures benchmark) at a tiny size, so they keep
working.  Speed is not asserted here (that is what the benchmarks are for), only that every
contender ran and reported what the README's tables show."""
from __future__ import annotations

import json
import time

import pytest

from benchmarks import (
    _e2e,
    _harness,
    _shapes,
    failures,
    makespan,
    overhead,
    scale,
    soak,
)

pytestmark = pytest.mark.benchmark  # benchmark smoke tests at tiny size


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def common(cluster, tmp_path):
    """Arguments every benchmark run takes: the session's cluster, JSON lines to a file."""
    out = tmp_path / "bench.jsonl"
    return out, ["--tiny", "--quiet", "--address", cluster.scheduler_address, "--json", str(out)]


def test_shapes_are_the_documented_dags():
    layered = _shapes.layered(1000, layers=100, seed=0)
    assert len(layered) == 1000 and layered == _shapes.layered(1000, layers=100, seed=0)
    assert all(1 <= len(ps) <= 3 for n, ps in layered.items() if not n.startswith("l0-"))
    assert all(p.startswith("l3-") for p in layered["l4-0"])
    assert _shapes.sinks(_shapes.chain(5)) == ["t4"]
    assert len(_shapes.sinks(_shapes.fan_out(10))) == 10


def test_harness_interleaves_and_reports_ratios(capsys):
    calls = []
    args = _harness.parser("t").parse_args(["--reps", "2", "--warmup", "0"])
    rows = _harness.compare("case", {"a": _harness.Contender(lambda _: calls.append("a")),
                                     "b": _harness.Contender(lambda _: calls.append("b"))},
                            args, tasks=10, baseline="a")
    assert calls == ["a", "b", "b", "a"]
    assert [r["contender"] for r in rows] == ["a", "b"] and rows[0]["ratio"] == 1.0
    _harness.report(rows, args, "t", ["case", "contender", "ratio"])
    out = capsys.readouterr().out
    assert '"benchmark": "t"' in out and "| case | contender | ratio |" in out


def test_overhead_tiny(common):
    out, argv = common
    assert overhead.main(argv) == 0
    rows = _rows(out)
    cases = {(r["case"], r.get("contender")) for r in rows}
    for case in ("chain-20", "fanout-50", "layered-200"):
        for who in ("raw", "cleo", "delayed"):
            assert (case, who) in cases
    assert all("error" not in r for r in rows)
    assert all(r["ratio"] > 0 for r in rows if r.get("contender") == "cleo" and "ratio" in r)
    assert any(r["case"] == "compile-1000" and r["compile_s"] >= 0 for r in rows)


def test_scale_tiny(common):
    out, argv = common
    assert scale.main(argv) == 0
    rows = {r["case"]: r for r in _rows(out)}
    assert rows["compile-10000"]["compile_s"] > 0 and "extra_b_per_node" in rows["compile-10000"]
    assert rows["submit-1000"]["first_result_s"] >= rows["submit-1000"]["submit_s"]


def test_scale_end_to_end_tiny_with_one_percent_failing(common):
    out, argv = common
    assert scale.main(argv + ["--e2e", "--fail-pct", "1", "--no-ray"]) == 0
    rows = {(r["case"], r["contender"]): r for r in _rows(out) if r.get("case", "").startswith("e2e-")}
    assert set(rows) == {(case, who) for case in ("e2e-300", "e2e-300-fail1%") for who in ("cleo", "raw")}
    assert all("error" not in r and r["median_s"] > 0 and r["client_peak_mib"] > 0 for r in rows.values())
    assert rows[("e2e-300", "raw")]["ratio"] == 1.0 and rows[("e2e-300", "cleo")]["ratio"] > 0
    failing = rows[("e2e-300-fail1%", "cleo")]
    assert failing["failing"] == len(_e2e.failing(_shapes.layered(300), 1)) > 0 and failing["fail_ratio"] > 0


def test_scale_end_to_end_tiny_with_ray(common):
    pytest.importorskip("ray")
    out, argv = common
    assert scale.main(argv + ["--e2e", "200", "--warmup", "0"]) == 0
    ray = [r for r in _rows(out) if r.get("contender") == "ray"]
    assert len(ray) == 1 and "error" not in ray[0] and ray[0]["procs_peak_mib"] > 0   # Ray's own processes


@pytest.mark.slow   # two processes, each starting its own cluster
def test_scale_end_to_end_runs_each_contender_in_a_fresh_process_by_default(tmp_path):
    out = tmp_path / "bench.jsonl"
    assert scale.main(["--tiny", "--quiet", "--json", str(out), "--e2e", "--no-ray", "--warmup", "0"]) == 0
    rows = {r["contender"]: r for r in _rows(out) if r.get("case") == "e2e-300"}
    assert set(rows) == {"cleo", "raw"} and all("error" not in r for r in rows.values())
    assert all(r["procs_peak_mib"] > 0 for r in rows.values())   # its own cluster's worker processes


def test_nodes_failing_once_are_chosen_by_name():
    names = [f"n{i}" for i in range(20_000)]
    chosen = _e2e.failing(names, 1)
    assert chosen == _e2e.failing(reversed(names), 1) and 150 <= len(chosen) <= 250
    assert _e2e.failing(names, 0) == set()


class _Forever:
    """A contender that never finishes (what the guard is for)."""

    name = "forever"

    def setup(self, case):
        return None

    def run(self, case, prepared, guard, deadline):
        _e2e.await_done(lambda t: time.sleep(t) or False, guard, deadline)

    def cleanup(self, aborted):
        self.aborted = aborted


def test_a_run_past_the_memory_cap_or_its_time_is_stopped_and_reported():
    import networkx as nx
    case = _e2e.Case(nx.DiGraph([("a", "b")]), 0)
    stopped = _e2e.timed_run(c := _Forever(), case, group=set(), count="group", cap=1, limit=60)
    assert stopped["error"].startswith("aborted: memory cap") and "seconds" not in stopped and c.aborted
    late = _e2e.timed_run(c, case, group=set(), count="group", cap=None, limit=0.2)
    assert late["error"] == "aborted: time limit passed (--run-timeout)" and late["client_peak_mib"] > 0
    crowded = _e2e.timed_run(c, case, group=set(), count="group", cap=None, limit=60, floor=1e15)
    assert crowded["error"].startswith("aborted: the machine's available memory fell to")


def test_a_guard_whose_interrupt_does_not_land_ends_the_process():
    """Past the cap, a run that the interrupt does not stop (here: SIGINT ignored; in a big run, a
    main thread busy in C) is ended with its process rather than run the machine out of memory."""
    import subprocess
    import sys
    code = ("import signal, time; from benchmarks import _harness as h; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "g = h.TreeMemory(cap=1, interrupt=True); g.grace = 0.5\n"
            "with g:\n    time.sleep(30)\n")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 70 and "the interrupt did not stop it" in done.stderr
    assert time.perf_counter() - t0 < 20


def test_makespan_tiny_on_two_traces(common):
    out, argv = common
    assert makespan.main(argv + ["--workflow", "nfcore", "--workflow", "soykb", "--estimated"]) == 0
    rows = [r for r in _rows(out) if r.get("contender") in ("cleo-cp", "cleo", "cleo-est")]
    per_trace = [r for r in rows if r["case"] != "median"]
    assert {r["case"] for r in per_trace} == {"wfi-nfcore-rnaseq", "wfi-soykb-10fastq-20ch"}
    assert all(r["ok"] and r["ideal_s"] == pytest.approx(1.0) and r["ratio"] >= 0.95 for r in per_trace)
    assert all(r["ref_ratio"] >= 1.0 for r in per_trace)


def test_failures_tiny(common):
    out, argv = common
    assert failures.main(argv) == 0
    rows = {(r["case"], r.get("contender")): r for r in _rows(out)}
    backoff = rows[("backoff-8x0.1s", "cleo")]
    assert "error" not in backoff and backoff["ratio"] > 0
    for who in ("no-failures", "1%-dask-retry", "1%-backoff-0.1s"):
        assert "error" not in rows[("layered-300", who)]


def test_makespan_names_each_trace_task_after_its_program():
    # Dask groups keys by task name: every blastall of a trace is one program, one group
    assert makespan.category("blastall_ID000002") == "blastall"
    assert makespan.category("individuals_merge_ID0000201") == "individuals_merge"
    assert makespan.category("NFCORE_RNASEQ.RNASEQ.QUANT.SALMON_12") == "SALMON"
    assert makespan.category("sol2sanger_sol2sanger_080603_ILMN-GA001_s_1_sequence") == "sol2sanger"
    wf = makespan.workflow({"tasks": [{"id": "a_ID1", "runtime_s": 1, "parents": []},
                                      {"id": "b_ID2", "runtime_s": 1, "parents": ["a_ID1"]}]}, 0.1, durations=True)
    assert {n: node.task.name for n, node in wf.nodes.items()} == {"a_ID1": "a", "b_ID2": "b"}


def test_soak_tiny_reports_growth_per_process_and_the_schedulers_state(common):
    out, argv = common
    assert soak.main(argv + ["--runs", "30", "--sample-every", "10"]) == 0
    rows = {(r.get("contender"), r.get("process")): r for r in _rows(out) if r.get("case") == "address"}
    cleo = rows[("cleo", "client+scheduler")]
    assert cleo["runs"] == 30 and "mib_per_1000_runs" in cleo and "raw_mib" in cleo
    assert ("raw", "client+scheduler") in rows
    state = rows[("cleo", "scheduler state")]
    assert state["topics_end"] <= state["topics_start"]   # run topics are retired
    assert state["tasks_end"] == 0 and state["runs_per_s"] > 0


def test_soak_slope_is_growth_per_thousand_runs():
    assert soak.slope([0, 1, 2], [10, 12, 14]) == 2.0
    assert soak.slope([1], [5]) == 0.0
