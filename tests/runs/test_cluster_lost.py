"""A lost scheduler is named, not reported as "cancelled" (issue 15, item 2).

Real ``dask scheduler`` / ``dask worker`` processes: the scheduler is SIGKILLed mid-run while
the client lives; the run raises :class:`cd.ClusterLost`, the journal marks it ``interrupted``
and a new engine on a new cluster resumes it without running finished nodes again.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import durable_tasks as dt
import pytest
from _dask_procs import Processes, cleo_dask_command, dask_command, env_with_tasks, wait_for_file
from distributed import Client

import cleo_dask as cd
from cleo_dask.durable.journal import Journal
from cleo_dask.cli.main import main

HERE = Path(__file__).resolve().parent.parent  # tests/: the helper modules and data


def _env() -> dict[str, str]:
    env = env_with_tasks(DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION="inf")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(Path(__file__).resolve().parent), env["PYTHONPATH"]])
    return env


def start_cluster(procs: Processes, name: str) -> str:
    """A ``dask scheduler`` and one ``dask worker`` (2 threads); the scheduler's address."""
    sched_file = procs.logdir / f"{name}-scheduler.json"
    procs.start(f"{name}-scheduler", dask_command() + ["scheduler", "--host", "127.0.0.1", "--port", "0",
                                                        "--no-dashboard", "--scheduler-file", str(sched_file)], _env())
    address = wait_for_file(sched_file, procs)["address"]
    procs.start(f"{name}-worker", dask_command() + ["worker", address, "--nthreads", "2", "--no-dashboard",
                                                     "--no-nanny"], _env())
    return address


def kill(procs: Processes, name: str) -> None:
    proc = dict(procs.procs)[name]
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # a worker without a nanny stops by itself once its scheduler is gone
    proc.wait(30)


def executions(log: Path) -> Counter:
    return Counter(log.read_text().split()) if log.exists() else Counter()


@pytest.mark.slow
def test_a_killed_scheduler_raises_cluster_lost_and_the_run_resumes_on_a_new_cluster(tmp_path, capsys):
    store, log = tmp_path / "runs.db", tmp_path / "exec.log"
    agent = cd.Agent("researcher-1", config={"log": str(log), "sleep": 0.2})
    wf = dt.layered(layers=4, width=6)
    procs, later = Processes(tmp_path), Processes(tmp_path)
    try:
        first = start_cluster(procs, "first")
        with cd.Engine(first, store=store, timeout=5) as engine:
            engine.client.wait_for_workers(1, timeout=60)
            run = engine.submit(wf, agent)
            journal = Journal(store)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                    len(executions(log)) >= 8
                    and any(r.status == "succeeded" for r in journal.nodes(run.id).values())):
                time.sleep(0.05)
            kill(procs, "first-scheduler")

            with pytest.raises(cd.ClusterLost) as lost:
                run.result(timeout=60)
            assert lost.value.address == first and first in str(lost.value) and run.id in str(lost.value)
            assert isinstance(lost.value, cd.CleoError)
            with pytest.raises(cd.ClusterLost):
                run.wait(10)
            assert run.done() and run.status() == "interrupted"
            assert engine.durable.wait_journaled(run.id)

            [record] = engine.runs(status="interrupted")
            assert record.id == run.id and record.ended is not None
        nodes = Journal(store).nodes(run.id)
        kept = {n for n, row in nodes.items() if row.status == "succeeded"}
        assert kept and len(kept) < len(wf), "the kill came too late (or too early) to test anything"
        assert not [n for n, row in nodes.items() if row.status == "cancelled"]
        assert main(["runs", "list", "--store", str(store), "--status", "interrupted"]) == 0
        assert run.id in capsys.readouterr().out
        kill(procs, "first-worker")
        ran_before = executions(log)

        second = start_cluster(later, "second")
        with cd.Engine(second, store=store, timeout=30) as engine:
            engine.client.wait_for_workers(1, timeout=60)
            resumed = engine.resume(run.id)
            assert resumed.resumed_from["kept"] >= len(kept)
            outcome = resumed.result(timeout=120)
            assert outcome.ok and outcome.durable
        ran = executions(log)
        assert set(ran) == set(wf.nodes)                        # every node ran, in one cluster or the other
        assert all(ran[n] == 1 for n in kept)                   # finished ones not again
        assert sum(ran.values()) - len(wf) <= sum(ran_before.values()) - len(kept)  # at most those in flight
        assert Journal(store).run(run.id).status == "succeeded"
    finally:
        procs.stop()
        later.stop()


def wait_for_go(agent) -> str:
    """Runs until the test creates the file ``agent.config["go"]``."""
    deadline = time.monotonic() + 60
    while not os.path.exists(agent.config["go"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return "went"


def test_closing_the_engine_before_a_run_finished_journals_it_interrupted(client, tmp_path):
    store, go = tmp_path / "runs.db", tmp_path / "go"
    engine = cd.Engine(client=client, store=store)
    run = engine.submit(wait_for_go, cd.Agent("a", config={"go": str(go)}))
    engine.close()  # nothing follows the run any more: resume it (not "running" in this live process)
    go.touch()
    record = Journal(store).run(run.id)
    assert record.status == "interrupted" and record.pid == os.getpid()


def greet(agent) -> str:
    return "hello"


def test_a_failed_resume_does_not_leave_the_run_running_in_this_process(cluster, client, tmp_path):
    store = tmp_path / "runs.db"
    own = Client(cluster, set_as_default=False)
    engine = cd.Engine(client=own, store=store)
    run = engine.submit(greet)
    assert run.result(timeout=60).ok and engine.durable.wait_journaled(run.id)
    own.close()
    with pytest.raises(cd.ClusterLost, match="client is closed"):
        engine.resume(run.id)
    engine.close()
    record = Journal(store).run(run.id)
    assert record.status == "succeeded" and record.resumes == 0  # not "running" under this process

    with cd.Engine(client=client, store=store) as again:  # a working engine resumes it
        assert again.resume(run.id).result(timeout=60)["greet"].value == "hello"


@pytest.mark.slow
def test_cli_run_names_the_lost_scheduler_and_exits_2(tmp_path):
    spec, store = tmp_path / "slow.yaml", tmp_path / "runs.db"
    spec.write_text("name: slow\nagent: {id: patient, config: {slow: 30}}\nnodes:\n"
                    "  fetch: {task: 'pipeline_tasks:fetch'}\n"
                    "  wait: {task: 'pipeline_tasks:slow'}\n")
    procs = Processes(tmp_path)
    try:
        address = start_cluster(procs, "only")
        cli = subprocess.Popen(cleo_dask_command() + ["run", str(spec), "--address", address, "--store", str(store),
                                                      "--no-progress", "--wait-workers", "1",
                                                      "--connect-timeout", "30"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                store.exists() and any(r.status == "succeeded" for run in Journal(store).runs()
                                       for r in Journal(store).nodes(run.id).values())):
            assert cli.poll() is None, cli.communicate()
            time.sleep(0.1)
        kill(procs, "only-scheduler")
        out, err = cli.communicate(timeout=60)
        assert cli.returncode == 2, err
        assert "cleo-dask: error: run " in err and address in err and "Traceback" not in err
        [record] = Journal(store).runs()
        assert record.status == "interrupted" and Journal(store).nodes(record.id)["fetch"].status == "succeeded"
    finally:
        procs.stop()
