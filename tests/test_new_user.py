"""What a new user writes on the first day, beyond the examples the README spells out.

Each test is a case found by trying the fixes of issues 14 and 15 with scripts, spec files and
clusters written from scratch (numbers written as ``1e3``, an interval too short to fire, a
scheduler file that is not there yet, ``--input x=NaN``).
"""
from __future__ import annotations

import textwrap
import threading
import time

import pytest

import cleo_dask as cd
from _dask_procs import SPECS
from cleo_dask.core.inputs import parse_input_args, read_inputs_file
from cleo_dask.schedules.build import make_trigger
from cleo_dask.core.spec import load_spec
from cleo_dask.schedules.triggers import IntervalTrigger


@pytest.fixture
def spec_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SPECS))
    return tmp_path


def write_spec(directory, node_options: str) -> str:
    path = directory / "spec.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: s
        agent: {{id: a, config: {{}}}}
        nodes:
          - {{name: fetch, task: "pipeline_tasks:fetch", {node_options}}}
        """))
    return str(path)


def test_a_spec_number_in_exponent_notation_is_a_number(spec_dir):
    # YAML 1.1 (PyYAML) reads 1e3 as the string '1e3'; YAML 1.2 and JSON read a number
    spec = load_spec(write_spec(spec_dir, "timeout: 1e3, backoff: {fixed: 2E-1}, retries: 2"))
    task = spec.workflow.nodes["fetch"].task
    assert task.timeout == 1000.0
    assert task.backoff == cd.fixed(0.2)


def test_a_huge_spec_number_in_exponent_notation_is_refused_as_out_of_range(spec_dir):
    with pytest.raises(cd.WorkflowError) as info:
        load_spec(write_spec(spec_dir, "timeout: 1e300"))
    assert "'timeout'" in str(info.value) and "100 years" in str(info.value)


def test_an_inputs_file_reads_exponent_notation_as_a_number(tmp_path):
    path = tmp_path / "inputs.yaml"
    path.write_text("threshold: 1e-3\nname: 1e3x\n")
    assert read_inputs_file(path) == {"threshold": 0.001, "name": "1e3x"}


@pytest.mark.parametrize("every", [1e-300, 1e-9, 1e-6, 0.0009])
def test_an_interval_shorter_than_a_millisecond_is_refused(every):
    # it used to be accepted, and the loop then failed on every tick (duplicate due times)
    with pytest.raises(cd.ScheduleError, match="every"):
        make_trigger(time.time(), every=every)
    with pytest.raises(cd.ScheduleError, match="every"):
        IntervalTrigger(every, cd_now())


def test_a_millisecond_interval_is_a_grid_of_distinct_times():
    trigger = IntervalTrigger(0.001, cd_now())
    times = [trigger.next() for _ in range(5)]
    assert len(set(times)) == 5


def cd_now():
    from datetime import datetime, timezone
    return datetime.now(timezone.utc)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_input_values_that_strict_json_does_not_know_are_plain_text(text):
    # `--input ticker=NaN` is the string 'NaN' (strict JSON has no NaN), not a float nan that a
    # persistent schedule store then refuses
    assert parse_input_args([f"ticker={text}"]) == {"ticker": text}


def test_an_input_number_that_overflows_is_refused_naming_the_flag():
    with pytest.raises(cd.WorkflowError, match=r"--input 'limit'.*finite"):
        parse_input_args(["limit=1e999"])
    assert parse_input_args(["limit=1e300"]) == {"limit": 1e300}


def test_an_engine_on_a_scheduler_file_that_never_appears_gives_up_within_its_timeout(tmp_path):
    result: list[BaseException] = []

    def connect():
        try:
            cd.Engine(scheduler_file=str(tmp_path / "scheduler.json"), timeout=1).close()
        except BaseException as exc:  # noqa: BLE001 - what the thread saw
            result.append(exc)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "Engine(scheduler_file=...) waited past its timeout"
    assert isinstance(result[0], cd.ClusterError)
    assert "scheduler.json" in str(result[0])


def test_an_engine_on_a_scheduler_file_without_an_address_is_a_cluster_error(tmp_path):
    path = tmp_path / "scheduler.json"
    path.write_text("not json")
    with pytest.raises(cd.ClusterError, match="scheduler.json"):
        cd.Engine(scheduler_file=str(path), timeout=1)


def _boom(agent):
    raise RuntimeError("nope")


def _below(agent, boom):
    return 1


def _leaf(agent, below):
    return 2


def test_the_journal_keeps_why_a_node_is_upstream_failed(client, tmp_path):
    # `cleo-dask runs show` prints the note: "upstream 'boom' failed (via 'below')"
    wf = cd.Workflow("uf")
    wf.add(_boom, name="boom")
    wf.add(_below, name="below", after="boom")
    wf.add(_leaf, name="leaf", after="below")
    with cd.Engine(client=client, store=tmp_path / "runs.db") as engine:
        run = engine.submit(wf, cd.Agent("a"))
        outcome = run.result(timeout=60)
        assert outcome["leaf"].reason == "upstream 'boom' failed (via 'below')"
        assert engine.durable.wait_journaled(run.id)
        nodes = engine.durable.journal.nodes(run.id)
    assert nodes["below"].status == "upstream_failed" and nodes["below"].note == "upstream 'boom' failed"
    assert nodes["leaf"].note == "upstream 'boom' failed (via 'below')"


def test_a_resumed_node_that_runs_loses_its_old_upstream_failed_note(tmp_path):
    from cleo_dask.durable.journal import Journal
    journal = Journal(tmp_path / "runs.db")
    journal.add_run("r1", agent="a", workflow="w", name="w", started=0.0, nodes=["boom", "below"], results="",
                    spec=None)
    journal.finish_run("r1", status="failed", ended=1.0, counts={}, nodes=[
        ("boom", "failed", 1, 0, 1, None, None), ("below", "upstream_failed", 0, None, None, None, None)],
        notes={"below": "upstream 'boom' failed"})
    assert journal.nodes("r1")["below"].note == "upstream 'boom' failed"
    journal.start_resume("r1")
    assert journal.nodes("r1")["below"].note is None
    journal.finish_run("r1", status="succeeded", ended=2.0, counts={}, nodes=[
        ("boom", "succeeded", 1, 0, 1, None, "x"), ("below", "succeeded", 1, 1, 2, None, "y")])
    assert journal.nodes("r1")["below"].note is None


def _not_a_number(agent):
    return float("nan")


def test_run_json_is_strict_json_when_a_value_is_nan(engine):
    # `cleo-dask run --json` output read by jq or another language: NaN is not JSON
    import json

    from cleo_dask.monitor.progress import outcome_json
    run = engine.submit(cd.Workflow.chain(_not_a_number), cd.Agent("a"))
    data = outcome_json(run, run.result(timeout=60))
    json.dumps(data, allow_nan=False)
    assert data["nodes"]["_not_a_number"]["value_repr"] == "nan"


def _one(agent):
    return 1


@pytest.mark.timeout(60)
def test_submitting_to_a_closed_engine_is_a_cluster_error_naming_why():
    engine = cd.Engine(processes=False, n_workers=1, threads_per_worker=1)
    engine.close()
    with pytest.raises(cd.ClusterError, match="engine is closed"):
        engine.submit(_one, cd.Agent("a"))
    result = engine.run(_one, cd.Agent("a"))  # never raises: the same error as a failed result
    assert result.status == cd.Status.FAILED and isinstance(result.error, cd.ClusterError)


@pytest.mark.timeout(60)
def test_submitting_through_a_client_that_was_closed_is_a_cluster_error(cluster):
    # Dask closes a client that cannot reconnect to a lost scheduler: later runs used to wait forever
    from distributed import Client
    client = Client(cluster, set_as_default=False)
    engine = cd.Engine(client=client)
    assert engine.run(_one, cd.Agent("a")).value == 1
    client.close()
    with pytest.raises(cd.ClusterError, match="client is closed"):
        engine.submit(_one, cd.Agent("a"))
    engine.close()


@pytest.mark.timeout(60)
def test_a_run_that_finished_stays_finished_when_its_client_goes_later(cluster):
    # status() flipped to "interrupted" and result() raised ClusterLost ("did not finish"), with a
    # warning, for a run that had succeeded before the client was closed (or lost its scheduler)
    from distributed import Client
    client = Client(cluster, set_as_default=False)
    engine = cd.Engine(client=client)
    run = engine.submit(_one, cd.Agent("a"))
    assert run.result(timeout=30)["_one"].status == cd.Status.SUCCEEDED
    client.close()
    assert run.status() == "succeeded" and run.done()
    assert run.result(timeout=5)["_one"].status == cd.Status.SUCCEEDED
    engine.close()


@pytest.mark.parametrize("upload", [[123], [b"/tmp"], 5])
def test_an_upload_that_is_not_a_path_is_a_code_error(upload):
    with pytest.raises(cd.CodeError, match="upload"):
        cd.Engine(processes=False, n_workers=1, upload=upload)



def test_cli_output_piped_into_head_stops_quietly(tmp_path):
    # `cleo-dask runs list --store runs.db | head -1`: no BrokenPipeError traceback
    import os
    import subprocess

    from _dask_procs import cleo_dask_command
    from cleo_dask.durable.journal import Journal
    journal = Journal(tmp_path / "runs.db")
    for i in range(300):
        journal.add_run(f"run{i}", agent="a", workflow="w", name="w", started=float(i), nodes=["n"], results="",
                        spec=None)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run(cleo_dask_command() + ["runs", "list", "--store", str(tmp_path / "runs.db")],
                          stdout=write, stderr=subprocess.PIPE, text=True, timeout=60, env=env)
    os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 141


@pytest.mark.slow
def test_a_spec_finds_the_task_modules_beside_it_from_another_directory(tmp_path):
    # `cleo-dask run project/spec.yaml` from elsewhere, as `python project/script.py` finds its modules
    import os
    import subprocess

    from _dask_procs import cleo_dask_command
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir(), elsewhere.mkdir()
    (project / "beside_spec_tasks.py").write_text("def hello(agent):\n    return 'hi'\n")
    (project / "spec.yaml").write_text(textwrap.dedent("""\
        name: beside
        agent: {id: a, config: {}}
        nodes:
          - {name: hello, task: "beside_spec_tasks:hello"}
        """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run(cleo_dask_command() + ["validate", str(project / "spec.yaml")], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_not_before_past_a_century_and_infinite_durations_are_refused(engine):
    with pytest.raises(cd.WorkflowError, match="not_before must be at most 100 years"):
        engine.submit(_one, cd.Agent("a"), not_before=1e300)
    with pytest.raises(cd.WorkflowError, match="critical_path durations must be finite"):
        engine.submit(_one, cd.Agent("a"), critical_path={"_one": float("inf")})
