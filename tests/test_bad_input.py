"""Bad input is refused with a clear cleo_dask error naming what is wrong (issue 15, items 4 and 5):
numbers that would hang a run or overflow (``inf``, ``nan``, ``1e300``), and values that used to
escape as raw Python errors, in the API, in spec files and on the command line (exit 2)."""
from __future__ import annotations

import json
import math
import textwrap
import time

import cloudpickle
import networkx as nx
import pytest

import cleo_dask as cd
from _dask_procs import SPECS
from cleo_dask.util.numbers import MAX_SECONDS
from cleo_dask.durable.resultstore import ResultStore, encode
from cleo_dask.failures.retry import RetryPolicy
from cleo_dask.schedules.build import make_options, make_trigger
from cleo_dask.core.spec import load_spec

INF, NAN = float("inf"), float("nan")


def work(agent):
    return 1


@pytest.fixture(autouse=True)
def tasks_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(SPECS))


def cli(args, capsys):
    """``cleo-dask ARGS`` in this process: (exit code, stderr).  argparse's errors exit 2 too."""
    from cleo_dask.cli.main import main
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def problems_in(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    with pytest.raises(cd.WorkflowError) as err:
        load_spec(path)
    return str(err.value)


# -- item 4: numbers that hang or overflow -------------------------------------------------------
@pytest.mark.parametrize("make, field", [
    (lambda: cd.fixed(INF), "fixed backoff"),
    (lambda: cd.fixed(NAN), "fixed backoff"),
    (lambda: cd.fixed(1e300), "fixed backoff"),
    (lambda: cd.exponential(max=INF), "'max'"),
    (lambda: cd.exponential(first=INF), "'first'"),
    (lambda: cd.exponential(factor=INF), "'factor'"),
    (lambda: cd.task(timeout=INF)(work), "timeout"),
    (lambda: cd.task(timeout=1e300)(work), "timeout"),
    (lambda: cd.task(timeout=NAN)(work), "timeout"),
    (lambda: cd.task(retries=10**30)(work), "retries"),
    (lambda: cd.task(duration=NAN)(work), "duration"),
    (lambda: cd.task(duration=INF)(work), "duration"),
    (lambda: cd.task(rate_limit=INF)(work), "rate_limit"),
    (lambda: cd.task(rate_limit="1e400/s")(work), "rate_limit"),
    (lambda: cd.task(rate_limit="1/99999999999999999999999d")(work), "rate_limit"),
    (lambda: cd.Workflow().add(work, timeout=INF), "timeout"),
    (lambda: cd.Agent("a", max_concurrency=2**40), "max_concurrency"),
    (lambda: cd.Engine(client=None, default_backoff=INF), "default_backoff"),
])
def test_non_finite_or_huge_policy_numbers_are_workflow_errors(make, field):
    with pytest.raises(cd.WorkflowError, match=field):
        make()


def test_an_exponential_backoff_never_overflows_past_its_cap():
    backoff = cd.exponential(first=1, factor=10, max=30)
    assert backoff.delay(10_000) == 30 and backoff.delay(2) == 10
    # a task asking for an endless wait gets the longest delay there is, not a hang or a crash
    policy = RetryPolicy(3, cd.fixed(1))
    assert policy.delay(cd.Retry(delay=INF), 1) == MAX_SECONDS
    assert policy.delay(cd.Retry(delay=NAN), 1) == 1.0
    assert policy.delay(cd.Retry(delay=10**400), 1) == MAX_SECONDS


@pytest.mark.parametrize("kwargs, field", [
    ({"delay": INF}, "delay"),
    ({"delay": 1e20}, "delay"),
    ({"every": INF}, "every"),
    ({"every": 1e20}, "every"),
    ({"every": NAN}, "every"),
    ({"every": 60, "jitter": NAN}, "jitter"),
    ({"cron": "0 0 31 2 *"}, "never matches"),
])
def test_schedule_numbers_out_of_range_and_crons_that_never_match_are_schedule_errors(kwargs, field):
    with pytest.raises(cd.ScheduleError, match=field):
        make_trigger(time.time(), **kwargs)


def test_schedule_options_out_of_range_are_schedule_errors():
    with pytest.raises(cd.ScheduleError, match="misfire_grace"):
        make_options(misfire_grace=INF)
    with pytest.raises(cd.ScheduleError, match="max_running"):
        make_options(max_running=2**40)


def test_priority_fail_fast_and_unknown_batch_keys_are_refused_before_submitting(engine):
    for priority in (NAN, INF):
        with pytest.raises(cd.WorkflowError, match="priority"):
            engine.submit(work, priority=priority)
    with pytest.raises(cd.WorkflowError, match="fail_fast must be True or False"):
        engine.submit(work, fail_fast="no")
    with pytest.raises(cd.WorkflowError, match="not_before"):
        engine.submit(work, not_before=INF)
    with pytest.raises(cd.WorkflowError, match="item 0 has unknown key.*'bogus'"):
        engine.submit_many([{"target": work, "bogus": 1}])


def test_spec_files_refuse_non_finite_numbers_naming_field_and_line(tmp_path):
    text = problems_in(tmp_path, "inf.yaml", """\
        priority: .nan
        nodes:
          - task: pipeline_tasks:fetch
            backoff: .inf
            timeout: 1.0e+300
          - task: pipeline_tasks:summarize
            after: fetch
            duration: .inf
            retries: 100000000000000
        """)
    for where in ("inf.yaml:1: field 'priority'", "inf.yaml:4: node 'fetch', field 'backoff'",
                  "inf.yaml:5: node 'fetch', field 'timeout'", "inf.yaml:8: node 'summarize', field 'duration'",
                  "inf.yaml:9: node 'summarize', field 'retries'"):
        assert where in text, text
    path = tmp_path / "inf.json"  # JSON's parser takes Infinity and NaN
    path.write_text('{"priority": NaN, "nodes": [{"task": "pipeline_tasks:fetch", "timeout": Infinity}]}')
    with pytest.raises(cd.WorkflowError, match="field 'timeout'.*finite"):
        load_spec(path)


@pytest.mark.parametrize("args, message", [
    (["--every", "1e400"], "--every must be a finite number of seconds"),
    (["--every", "99999999999d"], "--every must be at most"),
    (["--delay", "inf"], "--delay must be a finite number of seconds"),
    (["--delay", "nan"], "--delay must be a number of seconds"),
    (["--every", "60", "--jitter", "inf"], "--jitter"),
    (["--every", "60", "--misfire-grace", "1e400"], "--misfire-grace"),
    (["--cron", "0 0 31 2 *"], "never matches"),
    (["--every", "60", "--max-running", "0"], "--max-running"),
])
def test_schedule_add_refuses_bad_numbers_with_exit_2(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = cli(["schedule", "add", "pipeline_tasks:fetch", *args, "--store", "s.db"], capsys)
    assert code == 2 and message in err, err
    assert "Traceback" not in err


# -- item 4: a worker lost at every try is retried by the node's policy --------------------------
# (tests/failures/test_failures.py: test_a_task_that_kills_its_worker_is_retried_by_its_policy)


# -- item 5: raw errors where a clear one belongs --------------------------------------------------
def test_from_networkx_needs_a_mapping_of_tasks():
    g = nx.DiGraph([("a", "b")])
    with pytest.raises(cd.WorkflowError, match="tasks must be a mapping"):
        cd.Workflow.from_networkx(g, tasks=[work, work])


def test_workflow_name_agent_config_must_have_the_right_type():
    with pytest.raises(cd.WorkflowError, match="name must be a non-empty string, got 123"):
        cd.Workflow(name=123)
    with pytest.raises(cd.WorkflowError, match="config must be a mapping"):
        cd.Agent("a", config=None)
    with pytest.raises(cd.WorkflowError, match="config must be a mapping"):
        cd.Agent("a", config=[("topic", "dask")])
    assert cd.Agent("a", config={"topic": "dask"}).config == {"topic": "dask"}


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:1", "nonsense"])
def test_an_unreachable_or_malformed_scheduler_address_is_a_cluster_error(address):
    with pytest.raises(cd.ClusterError, match="cannot connect to") as err:
        cd.Engine(address, timeout=2)
    assert isinstance(err.value, cd.CleoError) and err.value.__cause__ is not None
    with pytest.raises(cd.WorkflowError, match="timeout"):
        cd.Engine(address, timeout=-1)


def test_yaml_tags_that_do_not_fit_their_value_are_spec_problems_with_a_line(tmp_path):
    text = problems_in(tmp_path, "tags.yaml", """\
        nodes:
          - task: pipeline_tasks:fetch
            retries: !!int three
            timeout: !!float ""
        """)
    assert "tags.yaml:3" in text and "invalid YAML" in text and "three" in text
    for doc, line in [("retries: !!int three", 3), ('timeout: !!float ""', 3), ("retries: !!bool maybe", 3),
                      ("retries: !!timestamp someday", 3), ("retries: !!map [1]", 3),
                      ("retries: !!python/object:os.system x", 3), ("retries: 1" + "0" * 5000, None)]:
        text = problems_in(tmp_path, "tag.yaml", f"nodes:\n  - task: pipeline_tasks:fetch\n    {doc}\n")
        assert "invalid YAML" in text and (line is None or f"tag.yaml:{line}" in text), (doc, text)


def test_documents_nested_too_deeply_are_spec_problems(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"nodes": ' + "[" * 5000 + "]" * 5000 + "}")
    with pytest.raises(cd.WorkflowError, match="nested too deeply"):
        load_spec(path)
    path = tmp_path / "deep.yaml"
    path.write_text("agent: {id: a, config: " + "[" * 500 + "]" * 500 + "}\nnodes: [{task: 'pipeline_tasks:fetch'}]\n")
    with pytest.raises(cd.WorkflowError, match="nested too deeply"):
        load_spec(path)


def test_run_json_to_a_missing_directory_is_refused_before_running(capsys):
    started = time.monotonic()
    code, err = cli(["run", str(SPECS / "pipeline.yaml"), "--json", "/nonexistent/dir/x.json"], capsys)
    assert code == 2 and "--json /nonexistent/dir/x.json: directory /nonexistent/dir does not exist" in err
    assert time.monotonic() - started < 30  # no cluster was started (a generous bound on a busy machine)


@pytest.mark.parametrize("args, message", [
    (["run", "x.yaml", "--connect-timeout", "-1"], "argument --connect-timeout: the value must be > 0 seconds"),
    (["run", "x.yaml", "--connect-timeout", "nan"], "argument --connect-timeout: the value must be a number"),
    (["run", "x.yaml", "--connect-timeout", "soon"], "argument --connect-timeout: expected seconds, got 'soon'"),
    (["cluster", "--port", "99999"], "argument --port: a port must be an integer <= 65535"),
    (["runs", "forget", "--store", "runs.db", "--older-than", "-1"], "argument --older-than: the value must be >= 0"),
    (["runs", "forget", "--store", "runs.db", "--older-than", "nan"], "argument --older-than"),
    (["runs", "list", "--store", "runs.db", "--status", "bogus"], "argument --status: invalid choice: 'bogus'"),
    (["resume", "r1", "--store", "runs.db", "--timeout", "inf"], "argument --timeout"),
])
def test_cli_arguments_out_of_range_exit_2_naming_the_flag(args, message, capsys):
    code, err = cli(args, capsys)
    assert code == 2 and message in err, err


def test_schedule_add_reads_a_yaml_agent_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.yaml").write_text("id: yaml-agent\nconfig: {topic: dask}\nmax_concurrency: 2\n")
    (tmp_path / "bad.yaml").write_text("id: x\nconfig: [1, 2]\n")
    code, err = cli(["schedule", "add", "pipeline_tasks:fetch", "--every", "60", "--agent-file", "a.yaml",
                     "--store", "s.db"], capsys)
    assert code == 0, err
    from cleo_dask.schedules.store import ScheduleStore
    from cleo_dask.schedules.agents import agent_from_bytes as load_agent
    store = ScheduleStore(str(tmp_path / "s.db"))
    [record] = store.all()
    assert load_agent(record.agent, record.agent_format) == cd.Agent("yaml-agent", {"topic": "dask"}, 2)
    store.close()
    code, err = cli(["schedule", "add", "pipeline_tasks:fetch", "--every", "60", "--agent-file", "bad.yaml",
                     "--store", "s.db"], capsys)
    assert code == 2 and "bad.yaml:2: field 'config': must be a mapping" in err, err


def test_a_result_file_with_a_valid_checksum_but_foreign_content_is_a_store_error(tmp_path):
    store = ResultStore(str(tmp_path / "results"))
    path = store.node_path("run1", "node")
    store.write(path, cloudpickle.dumps({"foreign": 1}))   # a sound file, not a node's output
    assert store.read(path)
    with pytest.raises(cd.StoreError, match="does not hold a node's output"):
        store.read_output(path)
    store.write(path, b"not a pickle at all")
    with pytest.raises(cd.StoreError, match="does not hold a node's output"):
        store.read_output(path)


def test_resuming_over_a_foreign_result_file_is_refused(client, tmp_path):
    with cd.Engine(client=client, store=tmp_path / "runs.db") as engine:
        run = engine.submit(work, cd.Agent("a"))
        assert run.result(timeout=60).ok and engine.durable.wait_journaled(run.id)
        path = engine.durable.results.node_path(run.id, "work")
        with open(path, "wb") as f:
            f.write(encode(cloudpickle.dumps("from another program")))
        with pytest.raises(cd.StoreError, match="does not hold a node's output") as err:
            engine.resume(run.id)
        assert path in str(err.value)


def test_the_numbers_validator_names_the_field():
    from cleo_dask.util.numbers import count, finite_number, seconds
    assert seconds(1.5, "x") == 1.5 and count(3, "n") == 3 and finite_number(10**20, "p") == 1e20
    for call, message in [(lambda: seconds(INF, "timeout"), "timeout must be a finite number of seconds"),
                          (lambda: seconds(-1, "delay"), "delay must be >= 0 seconds"),
                          (lambda: seconds(0, "every", positive=True), "every must be > 0 seconds"),
                          (lambda: finite_number(10**400, "priority"), "priority must be a finite number"),
                          (lambda: finite_number(True, "priority"), "priority must be a number"),
                          (lambda: count(2.0, "retries"), "retries must be an integer >= 0")]:
        with pytest.raises(cd.WorkflowError, match=message):
            call()
    with pytest.raises(cd.ScheduleError):
        seconds(math.inf, "every", error=cd.ScheduleError)
    assert json.dumps(MAX_SECONDS)  # a plain float (stored in SQLite and JSON as is)
