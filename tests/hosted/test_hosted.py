"""Runs carried by the scheduler (issue 18, part 2): `cleo-dask run --no-wait` exits, and the run
still gets every policy (delayed retry, fallback flowing to a child, a failing node, all_done),
as the same run waited; another process reads it (`runs show --address`, `Engine.attach`)."""
from __future__ import annotations

import json
import subprocess
import pytest

import cleo_dask as cd
from tests._dask_procs import (SPECS, Processes, cleo_dask_command, dask_command, env_with_cleo_only,
                               env_with_tasks, wait_for_file)

ENV = env_with_tasks()


def start_cluster(where, env):
    """A real `dask scheduler` and one `dask worker` run in ``where``: (processes, address)."""
    procs = Processes(where)
    file = where / "scheduler.json"
    procs.start("scheduler", dask_command() + ["scheduler", "--host", "127.0.0.1", "--port", "0",
                                               "--no-dashboard", "--scheduler-file", str(file)], env=env, cwd=where)
    address = wait_for_file(file, procs)["address"]
    procs.start("worker", dask_command() + ["worker", address, "--nthreads", "2", "--no-dashboard",
                                            "--host", "127.0.0.1"], env=env, cwd=where)
    return procs, address


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """A cluster that imports the tests' tasks (tests/specs on its PYTHONPATH): its address."""
    procs, address = start_cluster(tmp_path_factory.mktemp("hosted"), ENV)
    try:
        with cd.Engine(address=address) as engine:
            engine.client.wait_for_workers(1, timeout=60)
        yield address
    finally:
        procs.stop()


def cleo(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cleo_dask_command() + [str(a) for a in args], cwd=SPECS, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def nodes(data: dict) -> dict:
    """What must match node by node: status, number of attempts, value."""
    return {n: (d["status"], d["attempts"], d.get("value", d.get("value_repr"))) for n, d in data["nodes"].items()}


@pytest.mark.slow
def test_a_run_left_by_its_client_ends_as_the_same_run_waited(scheduler, tmp_path):
    waited = cleo("run", "hosted.yaml", "--address", scheduler, "--input", f"marker={tmp_path / 'm1'}",
                  "--json", tmp_path / "waited.json", "--no-progress")
    assert waited.returncode == 1, waited.stderr   # `explode` fails: so it must in both
    waited = json.loads((tmp_path / "waited.json").read_text())
    store = tmp_path / "runs.db"
    sent = cleo("run", "hosted.yaml", "--address", scheduler, "--input", f"marker={tmp_path / 'm2'}",
                "--no-wait", "--store", store)
    assert sent.returncode == 0, sent.stderr   # the submitting process has exited
    run_id = sent.stdout.strip()
    assert len(run_id) == 16 and "carried by the scheduler" in sent.stderr
    with cd.Engine(address=scheduler) as engine:   # another process reads it: progress, then outcome
        attached = engine.attach(run_id)
        assert set(attached.progress()) >= {"done", "pending", "error", "total"}
        outcome = attached.result(timeout=60)
        assert attached.status() == "failed"
    shown = cleo("runs", "show", run_id, "--address", scheduler, "--json")
    assert shown.returncode == 0, shown.stderr
    hosted = json.loads(shown.stdout)
    assert nodes(hosted) == nodes(waited)
    assert hosted["status"] == "failed"
    assert nodes(waited)["flaky"] == ("succeeded", 2, 6)          # retried after its 0.5 s backoff
    assert nodes(waited)["use"] == ("succeeded", 1, "used 'rescued from ValueError'")
    assert nodes(waited)["report"][0] == "succeeded"               # all_done after a failed parent
    assert {n: (r.status.value, len(r.attempts), json.loads(json.dumps(r.value))) for n, r in outcome.items()} \
        == nodes(waited)
    table = cleo("runs", "show", run_id, "--address", scheduler)
    assert table.returncode == 0 and "flaky" in table.stdout and "fell_back" in table.stdout
    # the journal rows were written by the cluster side
    journal = cleo("runs", "show", run_id, "--store", store, "--json")
    assert journal.returncode == 0, journal.stderr
    rows = {n["node"]: (n["status"], n["attempts"]) for n in json.loads(journal.stdout)["nodes"]}
    assert rows == {n: (s, a) for n, (s, a, _) in nodes(waited).items()}


@pytest.mark.slow
def test_attach_reads_a_detached_run_while_it_runs_and_after(scheduler, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SPECS))
    with cd.Engine(address=scheduler) as engine:
        wf = cd.load_spec(str(SPECS / "hosted.yaml")).workflow
        run = engine.submit(wf, cd.Agent("a"), inputs={"marker": str(tmp_path / "m")}, detach=True)
        again = engine.attach(run.id)
        assert again.status() == "running" and again.progress()["total"] == 6
        assert again.wait(timeout=60) and again.result()["flaky"].value == 6
        assert len(again.result()["flaky"].attempts) == 2


@pytest.mark.slow
def test_an_unknown_run_id_is_an_error(scheduler):
    with cd.Engine(address=scheduler) as engine, pytest.raises(cd.CleoError, match="no run 'nope'"):
        engine.attach("nope")
    shown = cleo("runs", "show", "nope", "--address", scheduler)
    assert shown.returncode == 2 and "no run 'nope'" in shown.stderr


def test_runs_show_needs_a_store_or_a_scheduler():
    shown = cleo("runs", "show", "abc")
    assert shown.returncode == 2 and "--store JOURNAL, or --address" in shown.stderr


@pytest.mark.slow
def test_a_hosted_run_of_code_the_cluster_cannot_import_goes_by_value(tmp_path):
    procs, address = start_cluster(tmp_path, env_with_cleo_only())   # a stock cluster with cleo_dask only
    try:
        sent = cleo("run", "hosted.yaml", "--address", address, "--wait-workers", "1",
                    "--input", f"marker={tmp_path / 'm'}", "--no-wait")
        assert sent.returncode == 0, sent.stderr
        with cd.Engine(address=address) as engine:
            outcome = engine.attach(sent.stdout.strip()).result(timeout=60)
        assert {n: r.status.value for n, r in outcome.items()} == {
            "fetch": "succeeded", "flaky": "succeeded", "risky": "fell_back", "use": "succeeded",
            "explode": "failed", "report": "succeeded"}
        assert outcome["use"].value == "used 'rescued from ValueError'" and len(outcome["flaky"].attempts) == 2
    finally:
        procs.stop()


@pytest.mark.slow
def test_a_tls_scheduler_hosts_runs_too(tmp_path):
    """The run host's own client speaks TLS with the scheduler's certificate."""
    from tests._dask_procs import make_certs, tls_flags
    certs = make_certs(tmp_path / "certs")
    file = tmp_path / "scheduler.json"
    proc = subprocess.Popen(cleo_dask_command() + [
        "cluster", "--workers", "1", "--no-processes", "--port", "0", "--dashboard-address", ":0",
        "--scheduler-file", file] + tls_flags(certs, "scheduler", dask_style=False),
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout.readline().startswith("scheduler: tls://127.0.0.1:")
        client = tls_flags(certs, "client", dask_style=False)
        sent = cleo("run", "hosted.yaml", "--scheduler-file", file, "--input", f"marker={tmp_path / 'm'}",
                    "--no-wait", *client)
        assert sent.returncode == 0, sent.stderr
        shown = cleo("runs", "show", sent.stdout.strip(), "--scheduler-file", file, "--json", *client)
        for _ in range(60):
            if shown.returncode != 0 or json.loads(shown.stdout)["status"] != "running":
                break
            shown = cleo("runs", "show", sent.stdout.strip(), "--scheduler-file", file, "--json", *client)
        assert shown.returncode == 0, shown.stderr
        assert nodes(json.loads(shown.stdout))["use"] == ("succeeded", 1, "used 'rescued from ValueError'")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_a_hosted_outcome_counts_like_a_run_outcome():
    from cleo_dask.hosted.attached import HostedOutcome
    out = HostedOutcome({"a": cd.TaskResult("a", cd.Status.SUCCEEDED, value=1),
                         "b": cd.TaskResult("b", cd.Status.FELL_BACK, value=2)})
    assert out.counts() == {"succeeded": 1, "fell_back": 1} and out.ok and out["b"].value == 2
    out = HostedOutcome({"c": cd.TaskResult("c", cd.Status.FAILED, error=ValueError("x"))})
    assert not out.ok and [r.node for r in out.failed()] == ["c"]


def test_the_hosts_client_uses_the_schedulers_certificate(tmp_path):
    from distributed.security import Security

    from cleo_dask.hosted.host import client_security
    assert client_security(None) is None and client_security(Security()).tls_client_cert is None
    scheduler = Security(tls_ca_file="ca.pem", tls_scheduler_cert="s.pem", tls_scheduler_key="s.key")
    mine = client_security(scheduler)
    assert (mine.tls_ca_file, mine.tls_client_cert, mine.tls_client_key) == ("ca.pem", "s.pem", "s.key")
