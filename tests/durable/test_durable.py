"""Durable runs: the journal, the result store, resuming after a crash, the cache, the CLI."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import durable_tasks as dt
import pytest

import cleo_dask as cd
from cleo_dask.durable.journal import Journal
from cleo_dask.durable.resultstore import ResultStore

HERE = Path(__file__).resolve().parent.parent  # tests/: the helper modules and data
ROOT = HERE.parent


def env_for_subprocess() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT), env.get("PYTHONPATH", "")])
    env["DASK_CLEO_DASK__LOCAL_CLUSTER__PROCESSES"] = "False"  # resume's own cluster: in-process
    env["DASK_CLEO_DASK__LOCAL_CLUSTER__N_WORKERS"] = "2"
    return env


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cleo_dask.cli", *args], capture_output=True, text=True,
                          env=env_for_subprocess(), timeout=timeout, cwd=str(ROOT))


def log_lines(path: Path) -> Counter:
    return Counter(path.read_text().split()) if path.exists() else Counter()


@pytest.fixture
def durable(client, tmp_path):
    """An engine journaling into tmp_path/runs.db (results in tmp_path/runs.db.results)."""
    with cd.Engine(client=client, store=tmp_path / "runs.db") as e:
        yield e


def agent_logging_to(tmp_path: Path, **config) -> cd.Agent:
    return cd.Agent("researcher-1", config={"log": str(tmp_path / "exec.log"), **config})


# -- the result store and the journal, without a cluster -----------------------------------------
def test_result_files_are_atomic_and_checked(tmp_path):
    store = ResultStore(str(tmp_path / "results"))
    path = store.node_path("run1", "a node/with odd:name")
    store.write(path, b"x" * 1000)
    assert store.read(path) == b"x" * 1000
    assert [p.name for p in Path(path).parent.iterdir()] == [Path(path).name]  # no temporary left

    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 10)
    with pytest.raises(cd.StoreError, match="truncated") as err:
        store.read(path)
    assert path in str(err.value)

    store.write(path, b"x" * 1000)
    with open(path, "r+b") as f:
        f.seek(size - 5)
        f.write(b"y")
    with pytest.raises(cd.StoreError, match="corrupted") as err:
        store.read(path)
    assert path in str(err.value)


def test_journal_schema_version_unknown_run_and_corruption(tmp_path):
    path = tmp_path / "runs.db"
    journal = Journal(path)
    spec = b"S" * 64 + os.urandom(64)
    journal.add_run("r1", agent="a", workflow="wf", name="wf", started=time.time(), nodes=["x"],
                    results="res", spec=spec)
    with pytest.raises(cd.StoreError, match="no run 'nope'"):
        journal.run("nope")
    journal.close()

    # a spec whose bytes changed on disk is detected by its checksum
    data = bytearray(path.read_bytes())
    at = data.find(spec[64:96])
    data[at + 3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(cd.StoreError, match="corrupted") as err:
        Journal(path).spec("r1")
    assert str(path) in str(err.value)

    # a b-tree page damaged: caught by the check a resume makes first
    other = tmp_path / "other.db"
    j = Journal(other)
    for i in range(100):
        j.add_run(f"r{i}", agent="a", workflow="wf", name="wf", started=i, nodes=[f"n{k}" for k in range(10)],
                  results="res", spec=b"x")
    j.close()
    data = bytearray(other.read_bytes())
    data[3 * 4096] ^= 0xFF  # the page-type byte of page 4
    other.write_bytes(bytes(data))
    with pytest.raises(cd.StoreError) as err:
        Journal(other).check()
    assert str(other) in str(err.value)

    # another schema version
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE journal_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(cd.StoreError, match="schema version 99") as err:
        Journal(path)
    assert str(path) in str(err.value)

    # bytes flipped in the file header: not a database any more
    data = bytearray(path.read_bytes())
    for i in range(0, 16):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(cd.StoreError) as err:
        Journal(path)
    assert str(path) in str(err.value)
    assert cli("runs", "list", "--store", str(path)).returncode == 2


# -- on a cluster ----------------------------------------------------------------------------------
def test_failed_run_is_journaled_and_resumed(durable, tmp_path):
    agent = agent_logging_to(tmp_path, flag=str(tmp_path / "flag"))
    wf = cd.Workflow("flaky")
    wf.add(dt.root)
    wf.add(dt.flaky_once)
    wf.add(dt.child, after=["root", "flaky_once"])
    run = durable.submit(wf, agent)
    assert run.result(timeout=60)["flaky_once"].status == cd.Status.FAILED
    assert durable.durable.wait_journaled(run.id)
    [record] = durable.runs(agent="researcher-1", status="failed")
    assert record.id == run.id and record.workflow == "flaky" and record.counts["failed"] == 1
    assert durable.durable.journal.nodes(run.id)["root"].status == "succeeded"
    # below the failure: kept as upstream_failed (a kind of skip, not a result a resume keeps)
    assert durable.durable.journal.nodes(run.id)["child"].status == "upstream_failed"
    assert record.counts["upstream_failed"] == 1

    with sqlite3.connect(tmp_path / "runs.db") as conn:  # as if a live process (our parent) ran it
        conn.execute("UPDATE journal_runs SET status = 'running', pid = ? WHERE id = ?", (os.getppid(), run.id))
    with pytest.raises(cd.StoreError, match=f"still running in process {os.getppid()}"):
        durable.resume(run.id)

    resumed = durable.resume(run.id, force=True)
    outcome = resumed.result(timeout=60)
    assert outcome.ok and outcome["child"].value == "1-ok"
    assert log_lines(tmp_path / "exec.log") == {"root": 1, "flaky": 2, "child": 1}
    assert durable.durable.wait_journaled(run.id)
    [record] = durable.runs(status="succeeded")
    assert record.id == run.id and record.resumes == 1
    assert durable.runs(status="failed") == []

    with pytest.raises(cd.StoreError, match="no run 'unknown'"):
        durable.resume("unknown")


def test_a_resumed_run_keeps_its_inputs(durable, tmp_path):
    agent = agent_logging_to(tmp_path, flag=str(tmp_path / "flag"))
    wf = cd.Workflow("asking")
    wf.add(dt.flaky_once)
    wf.add(dt.ask, after=["flaky_once"])
    run = durable.submit(wf, agent, inputs={"question": "why?"})
    assert run.result(timeout=60)["ask"].status == "upstream_failed"
    assert durable.durable.wait_journaled(run.id)
    resumed = durable.resume(run.id)   # the journal kept the inputs: the inner node gets them again
    assert resumed.result(timeout=60)["ask"].value == "why? ok"


def test_unpicklable_result_runs_but_is_not_resumable(durable, tmp_path):
    agent = agent_logging_to(tmp_path)
    wf = cd.Workflow.chain(dt.unpicklable, dt.uses_it)
    run = durable.submit(wf, agent)
    assert run.result(timeout=60)["uses_it"].value == "lock"
    assert durable.durable.wait_journaled(run.id)
    node = durable.durable.journal.nodes(run.id)["unpicklable"]
    assert not node.resumable and "cannot be pickled" in node.note

    assert durable.resume(run.id).result(timeout=60)["uses_it"].value == "lock"
    assert log_lines(tmp_path / "exec.log") == {"unpicklable": 2, "uses_it": 2}  # both ran again


def test_damaged_result_file_stops_resume(durable, tmp_path):
    agent = agent_logging_to(tmp_path)
    run = durable.submit(dt.root, agent)
    assert run.result(timeout=60).ok
    path = durable.durable.results.node_path(run.id, "root")
    with open(path, "r+b") as f:
        f.truncate(20)
    with pytest.raises(cd.StoreError, match="truncated") as err:
        durable.resume(run.id)
    assert path in str(err.value)


def test_cached_tasks_run_once_across_runs_and_engines(client, durable, tmp_path):
    agent = agent_logging_to(tmp_path)
    wf = cd.Workflow.chain(dt.expensive, dt.after_expensive)
    first = durable.submit(wf, agent).result(timeout=60)
    second = durable.submit(wf, agent).result(timeout=60)
    assert first.values_by_node() == second.values_by_node() == {"expensive": 0, "after_expensive": 1}
    assert second["expensive"].reason == "cache hit"
    assert durable.run(dt.expensive, agent, x=21).value == 42
    with cd.Engine(client=client, store=tmp_path / "runs.db") as again:  # a new engine, same store
        assert again.run(dt.expensive, agent, x=21).value == 42
        assert again.run(dt.expensive, agent, x=22).value == 44
    assert [r.status for r in Journal(tmp_path / "runs.db").runs(limit=2)] == ["succeeded"] * 2  # journaled by close()
    assert log_lines(tmp_path / "exec.log") == {"expensive-0": 1, "after_expensive": 1, "expensive-21": 1,
                                               "expensive-22": 1}


def test_cache_key_function_and_fsspec_result_store(client, tmp_path):
    store = cd.RunStore(str(tmp_path / "runs.db"), results=f"memory://cleo-{tmp_path.name}")
    calls = tmp_path / "exec.log"

    @cd.task(cache=lambda agent, x: x % 10)  # the key function decides what counts as "the same call"
    def last_digit(agent, x):
        dt._log(agent, f"last_digit-{x}")
        return x % 10

    agent = agent_logging_to(tmp_path)
    with cd.Engine(client=client, store=store) as e:
        assert [e.run(last_digit, agent, x=x).value for x in (3, 13, 4)] == [3, 3, 4]
        run = e.submit(dt.layered(2, 2), agent)
        values = run.result(timeout=60).values_by_node()
        assert e.durable.results.exists(e.durable.results.node_path(run.id, "n1_1"))
        assert e.resume(run.id).result(timeout=60).values_by_node() == values
    assert log_lines(calls) == {"last_digit-3": 1, "last_digit-4": 1, "n0_0": 1, "n0_1": 1, "n1_0": 1, "n1_1": 1}


@pytest.mark.slow
def test_killed_client_resumes_without_rerunning_finished_nodes(engine, tmp_path):
    store, log = tmp_path / "runs.db", tmp_path / "exec.log"
    proc = subprocess.Popen([sys.executable, str(HERE / "durable_tasks.py"), "crash", str(store), str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env_for_subprocess())
    try:
        run_id = proc.stdout.readline().strip()
        deadline = time.time() + 120
        while sum(log_lines(log).values()) < 100 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    ran_before = log_lines(log)
    total = len(dt.layered())
    assert 0 < len(ran_before) < total, "the kill came too late (or too early) to test anything"
    assert [r.id for r in Journal(store).runs(status="interrupted")] == [run_id]  # its process is gone
    succeeded_before = {n for n, row in Journal(store).nodes(run_id).items() if row.status == "succeeded"}
    assert succeeded_before, "the journal recorded no finished node before the kill"

    done = cli("resume", run_id, "--store", str(store))
    assert done.returncode == 0, done.stderr
    ran = log_lines(log)
    assert set(ran) == set(dt.layered().nodes)                                # every node ran
    assert all(ran[n] == 1 for n in succeeded_before)                        # none of those again
    assert sum(ran.values()) - total <= 2 * 2                                # at most the in-flight ones

    # results equal an uninterrupted (not durable) run of the same workflow
    expected = engine.submit(dt.layered(), cd.Agent("x", config={"log": str(tmp_path / "other.log")}))
    with cd.Engine(client=engine.client, store=store) as again:
        resumed = again.resume(run_id).result(timeout=60)  # everything is kept now: nothing runs
        assert resumed.values_by_node() == expected.result(timeout=120).values_by_node()
    assert log_lines(log) == ran
    shown = cli("runs", "show", run_id, "--store", str(store))
    assert shown.returncode == 0 and "succeeded" in shown.stdout


@pytest.mark.slow
def test_several_processes_share_one_journal(tmp_path):
    store, log = tmp_path / "runs.db", tmp_path / "exec.log"
    procs = [subprocess.Popen([sys.executable, str(HERE / "durable_tasks.py"), "many", str(store), str(log), "4",
                               str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env_for_subprocess()) for i in range(3)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.split()[-1] == "4"
        assert "locked" not in err
    records = Journal(store).runs()
    assert len(records) == 12 and {r.status for r in records} == {"succeeded"}
    assert {r.agent for r in records} == {"agent-0", "agent-1", "agent-2"}
    listed = cli("runs", "list", "--store", str(store), "--agent", "agent-1")
    assert listed.returncode == 0 and listed.stdout.count("agent-1") == 4


@pytest.mark.slow
def test_cli_resume_exits_1_when_a_node_fails_again(durable, tmp_path):
    run = durable.submit(cd.Workflow.chain(dt.root, dt.always_fails), agent_logging_to(tmp_path))
    assert run.result(timeout=60)["always_fails"].status == cd.Status.FAILED
    assert durable.durable.wait_journaled(run.id)
    res = cli("resume", run.id, "--store", str(tmp_path / "runs.db"))
    assert res.returncode == 1, res.stderr
    assert "1 node(s) kept, 1 to run" in res.stderr
    assert log_lines(tmp_path / "exec.log") == {"root": 1, "always_fails": 2}
    shown = cli("runs", "show", run.id, "--store", str(tmp_path / "runs.db"))
    assert "the service is down" in shown.stdout and "resumes 1" in shown.stdout

    gone = cli("runs", "forget", run.id, "--store", str(tmp_path / "runs.db"))
    assert gone.returncode == 0, gone.stderr
    assert not Path(durable.durable.results.node_path(run.id, "root")).parent.exists()
    assert durable.runs() == []


@pytest.mark.slow
def test_cli_run_with_a_store_is_journaled(tmp_path):
    store = tmp_path / "runs.db"
    res = subprocess.run([sys.executable, "-m", "cleo_dask.cli", "run", "failing.json", "--store", str(store),
                          "--no-progress"], capture_output=True, text=True, env=env_for_subprocess(),
                         cwd=str(HERE / "specs"), timeout=120)
    assert res.returncode == 1, res.stderr
    [record] = Journal(store).runs(agent="unlucky")
    assert record.status == "failed" and record.workflow == "failing"
    assert Journal(store).nodes(record.id)["fetch"].status == "succeeded"


@pytest.mark.slow
def test_cli_bad_input(tmp_path):
    store = tmp_path / "runs.db"
    Journal(store).close()
    res = cli("resume", "no-such-run", "--store", str(store))
    assert res.returncode == 2 and "no run 'no-such-run'" in res.stderr
    res = cli("runs", "show", "x", "--store", str(tmp_path / "missing.db"))
    assert res.returncode == 2 and "missing.db" in res.stderr


@pytest.mark.benchmark
def test_durable_benchmark_smoke(capsys):
    from benchmarks import durable
    assert durable.main(["--tiny", "--in-process", "--quiet", "--workers", "1"]) == 0
    table = capsys.readouterr().out
    assert "| layered-100 | durable |" in table and "| layered-100 | resume |" in table
