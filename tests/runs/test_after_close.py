"""Outcomes read after their engine closed (issue 14 item 1): the natural way to write a script."""
from __future__ import annotations

import os
import signal
import threading
import time

import dask
import pytest

import cleo_dask as cd


@cd.task
def fetch(agent):
    return f"news about {agent.config['topic']}"


@cd.task
def summarize(agent, fetch):
    return fetch.upper()


@cd.task
def blob(agent, size: int = 100_000):
    return b"x" * size


_release = threading.Event()   # the session's workers run in this process: frees slow()'s thread


@cd.task
def slow(agent):
    _release.wait(30)


def quickstart() -> cd.Workflow:
    wf = cd.Workflow()
    wf.add(fetch)
    wf.add(summarize, after=["fetch"])
    return wf


@pytest.mark.slow
def test_outcomes_and_task_results_of_a_started_cluster_work_after_the_with_block(agent):
    with cd.Engine(n_workers=1) as engine:
        out = engine.submit(quickstart(), agent).result()
        single = engine.run(fetch, agent)
        run = engine.submit(quickstart(), agent)
        run.wait()   # held, its outcome never asked for before close
    assert engine.cluster.status.name == "closed"
    assert out["summarize"].value == "NEWS ABOUT DASK"
    assert out.values_by_node() == {"fetch": "news about dask", "summarize": "NEWS ABOUT DASK"}
    assert single.ok and single.value == "news about dask"
    assert run.status() == "succeeded" and run.done() and run.wait()
    assert run.result()["summarize"].value == "NEWS ABOUT DASK"
    assert run.progress()["done"] == 2


def test_with_your_own_client_values_are_kept_and_the_cluster_forgets_the_runs(client, agent):
    with cd.Engine(client=client) as engine:
        out = engine.submit(quickstart(), agent).result()
        keys = [f.key for f in out.run.futures.values()]
        read_before = engine.submit(quickstart(), agent).result()
        assert read_before["fetch"].value == "news about dask"
    assert out["summarize"].value == "NEWS ABOUT DASK"
    assert read_before["summarize"].value == "NEWS ABOUT DASK"
    deadline = time.time() + 10
    while time.time() < deadline and client.run_on_scheduler(_known, keys):
        time.sleep(0.05)
    assert client.run_on_scheduler(_known, keys) == []   # released at close, values kept on the client


def _known(keys, dask_scheduler=None):
    return [k for k in keys if k in dask_scheduler.tasks]


def test_values_past_the_close_fetch_limit_raise_a_clear_error_and_fetch_true_keeps_them(client, agent):
    with dask.config.set({"cleo_dask.close-fetch-limit": "10 kB"}):
        with cd.Engine(client=client) as engine:
            unread = engine.submit(blob, agent).result()
            fetched = engine.submit(blob, agent).result(fetch=True)
    assert fetched["blob"].value == b"x" * 100_000
    with pytest.raises(cd.CleoError) as err:
        unread["blob"].value
    msg = str(err.value)
    assert "engine is closed" in msg and "cleo_dask.close-fetch-limit" in msg
    assert "run.result(fetch=True)" in msg and "before closing" in msg
    with pytest.raises(cd.CleoError, match="blob"):
        unread.run.result(fetch=True)
    assert unread["blob"].status == "succeeded"   # everything but the value is kept


def test_only_the_newest_values_fit_under_the_limit(client, agent):
    with dask.config.set({"cleo_dask.close-fetch-limit": "150 kB"}):
        with cd.Engine(client=client) as engine:
            older = engine.submit(blob, agent).result()
            newer = engine.submit(blob, agent).result()
    assert newer["blob"].value == b"x" * 100_000
    with pytest.raises(cd.CleoError, match="close-fetch-limit"):
        older["blob"].value


def test_a_run_unfinished_at_close_has_no_outcome(client, agent):
    try:
        with cd.Engine(client=client) as engine:
            run = engine.submit(slow, agent)
        with pytest.raises(cd.CleoError, match="closed before the run finished"):
            run.result()
        assert run.status() == "cancelled" and not run.done()
    finally:
        _release.set()   # a cancelled task keeps its worker thread until it returns: later tests need it


def test_a_bad_close_fetch_limit_is_named():
    from cleo_dask.runs.keep import fetch_limit
    with dask.config.set({"cleo_dask.close-fetch-limit": "lots"}):
        with pytest.raises(cd.CleoError, match="close-fetch-limit"):
            fetch_limit()
    with dask.config.set({"cleo_dask.close-fetch-limit": "1 MiB"}):
        assert fetch_limit() == 1024 * 1024


@pytest.mark.slow
def test_after_the_remote_scheduler_is_gone_a_value_read_says_the_engine_is_closed(tmp_path, agent):
    """Real ``dask scheduler`` / ``dask worker`` processes; the scheduler is killed before close."""
    from _dask_procs import Processes, dask_command, env_with_tasks, wait_for_file

    procs = Processes(tmp_path)
    sched_file = tmp_path / "scheduler.json"
    env = env_with_tasks()
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), env["PYTHONPATH"]])  # this module's tasks
    try:
        sched = procs.start("scheduler", dask_command() + ["scheduler", "--scheduler-file", str(sched_file),
                                                           "--port", "0", "--dashboard-address", ":0"], env=env)
        wait_for_file(sched_file, procs)
        procs.start("worker", dask_command() + ["worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                                                "--no-nanny"], env=env)
        engine = cd.Engine(scheduler_file=str(sched_file))
        engine.client.wait_for_workers(1, timeout=60)
        wf = cd.Workflow()
        wf.add(fetch)
        wf.add(blob)   # not fused with fetch: its own Dask key
        out = engine.submit(wf, agent).result(timeout=60)
        read = out["fetch"].value
        os.killpg(sched.pid, signal.SIGKILL)
        sched.wait(10)
        deadline = time.time() + 30
        while engine.client.status == "running" and time.time() < deadline:
            time.sleep(0.05)
        engine.close()
    finally:
        procs.stop()
    assert read == "news about dask" and out["fetch"].value == read
    with pytest.raises(cd.CleoError, match="engine is closed") as err:
        out["blob"].value
    assert "cluster was already gone" in str(err.value) and "run.result(fetch=True)" in str(err.value)
