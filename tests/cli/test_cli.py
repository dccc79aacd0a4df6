"""The ``cleo-dask`` command, driven as a user would from a shell (real subprocesses)."""
from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import time

import pytest
from distributed import Client

from _dask_procs import SPECS, cleo_dask_command, env_with_tasks, make_certs, tls_flags

ENV = env_with_tasks()


def cleo(*args, env=None, timeout=120):
    """Run ``cleo-dask ARGS`` in the specs folder; the finished process (text output)."""
    return subprocess.run(cleo_dask_command() + list(map(str, args)), cwd=SPECS, env=env or ENV,
                          capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster_address():
    """``cleo-dask cluster`` in the background (workers as threads, for speed); its address."""
    proc = subprocess.Popen(cleo_dask_command() + ["cluster", "--workers", "2", "--no-processes", "--port", "0",
                                                   "--dashboard-address", ":0"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    while not any(line.startswith("press Ctrl+C") for line in lines):
        line = proc.stdout.readline()  # the four lines come at once, when the cluster is up
        if not line:
            break
        lines.append(line.strip())
    info = dict(line.split(": ", 1) for line in lines if ": " in line)
    assert "scheduler" in info, lines
    assert info["scheduler"].startswith("tcp://127.0.0.1:")
    assert info["dashboard"].startswith("http://")
    yield info["scheduler"]
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "cluster stopped" in out


def test_validate_a_good_spec():
    done = cleo("validate", "pipeline.yaml")
    assert done.returncode == 0, done.stderr
    assert "valid: workflow 'research', 3 nodes, agent 'researcher-1'" in done.stdout
    assert "summarize <- fetch" in done.stdout


def test_validate_reports_every_problem_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  - name: a\n    task: pipeline_tasks:nope\n    retries: -1\n    colour: red\n")
    done = cleo("validate", bad)
    assert done.returncode == 2 and done.stdout == ""
    assert "3 problems in" in done.stderr
    assert "bad.yaml:3: node 'a', field 'task'" in done.stderr
    assert "bad.yaml:4: node 'a', field 'retries'" in done.stderr
    assert "bad.yaml:5: node 'a', field 'colour': unknown key 'colour'" in done.stderr


@pytest.mark.parametrize("content, message", [
    (None, "no such spec file"),
    ("nodes: [", "invalid YAML"),
    ("nodes:\n  - {name: a, task: 'pipeline_tasks:fetch', after: [b]}\n"
     "  - {name: b, task: 'pipeline_tasks:fetch', after: [a]}\n", "the graph has a cycle"),
])
def test_run_refuses_bad_input_with_exit_2(tmp_path, content, message):
    path = tmp_path / "spec.yaml"
    if content is not None:
        path.write_text(content)
    done = cleo("run", path)
    assert done.returncode == 2 and message in done.stderr and "cleo-dask: error:" in done.stderr


def test_run_on_a_cluster_writes_json_and_exits_0(cluster_address, tmp_path):
    out = tmp_path / "results.json"
    done = cleo("run", "pipeline.yaml", "--address", cluster_address, "--json", out)
    assert done.returncode == 0, done.stderr
    # the summary table
    header, rule, *rows = done.stdout.splitlines()
    assert header.split()[:4] == ["node", "status", "attempts", "duration"]
    assert rows[0].split()[:3] == ["fetch", "succeeded", "1"]
    assert rows[2].split()[:2] == ["risky", "fell_back"] and "ValueError: boom" in rows[2]
    # plain progress lines when not on a terminal
    assert "progress: " in done.stderr and "finished: 1 fell_back, 2 succeeded" in done.stderr
    results = json.loads(out.read_text())
    assert results["status"] == "succeeded" and results["agent"] == "researcher-1"
    nodes = results["nodes"]
    assert nodes["fetch"]["value"] == [0, 1, 2, 3]
    assert nodes["summarize"]["value"] == "researcher-1: 4 items"
    assert nodes["risky"]["value"] == "fallback after ValueError" and nodes["risky"]["fallback_used"]
    assert all(n["worker"].startswith("tcp://127.0.0.1:") for n in nodes.values())


def test_a_failed_node_exits_1(cluster_address, tmp_path):
    out = tmp_path / "results.json"
    done = cleo("run", "failing.json", "--address", cluster_address, "--json", out, "--no-progress")
    assert done.returncode == 1, done.stderr
    assert "explode  failed" in done.stdout
    results = json.loads(out.read_text())
    assert results["status"] == "failed" and results["failed"] == ["explode"]
    assert results["nodes"]["explode"]["attempts"] == 2 and "boom" in results["nodes"]["explode"]["error"]
    assert results["nodes"]["report"]["status"] == "succeeded"  # trigger all_done


def test_run_an_import_path_with_an_agent_file_json_to_stdout(cluster_address, tmp_path):
    agent = tmp_path / "agent.json"
    agent.write_text(json.dumps({"id": "cli-agent", "config": {"n": 0}}))
    done = cleo("run", "pipeline_tasks:workflow", "--agent-file", agent, "--address", cluster_address,
                "--json", "-", "--no-progress")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout[done.stdout.index("{"):])
    assert results["agent"] == "cli-agent"
    assert results["nodes"]["fetch"]["value"] == []
    assert results["nodes"]["summarize"]["status"] == "skipped"  # its condition was false


def test_run_gives_the_workflow_its_inputs(cluster_address, tmp_path):
    inputs = tmp_path / "inputs.yaml"
    inputs.write_text("question: from the file\ndepth: 2\n")
    done = cleo("run", "qa.yaml", "--address", cluster_address, "--inputs-file", inputs,
                "--input", "question=why is the sky blue?", "--input", "depth=3", "--json", "-", "--no-progress")
    assert done.returncode == 0, done.stderr
    nodes = json.loads(done.stdout[done.stdout.index("{"):])["nodes"]
    # --input wins over the file ("3" read as JSON, the question as plain text), the file over the spec
    assert nodes["plan"]["value"] == "plan 3 for why is the sky blue?"
    # `tone` from the spec's inputs; `question` reaches the inner node too
    assert nodes["answer"]["value"] == "polite answer to 'why is the sky blue?' after 'plan 3 for why is the sky blue?'"


@pytest.mark.parametrize("args, message", [
    ([], "missing input 'question': a required parameter (of nodes 'plan', 'answer')"),
    (["--input", "question=?", "--input", "colour=red"], "unknown input 'colour': no node takes it"),
    (["--input", "question"], "--input 'question': expected NAME=VALUE"),
    (["--input", "question=a", "--input", "question=b"], "--input 'question' is given twice"),
    (["--inputs-file", "nope.json"], "inputs file not found: nope.json"),
    (["--inputs-file", "qa.yaml"], "unknown input 'name'"),   # a mapping, of the wrong things
    (["--inputs-file", "pipeline_tasks.py"], "is not valid YAML"),
])
def test_run_refuses_bad_inputs_with_exit_2_before_starting_a_cluster(args, message, monkeypatch, capsys):
    from cleo_dask.cli.main import main   # in this process: the same code, without a subprocess's start-up
    monkeypatch.chdir(SPECS)
    monkeypatch.syspath_prepend(str(SPECS))
    assert main(["run", "qa.yaml", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("cleo-dask: error:"), err


def test_validate_lists_the_workflows_parameters(monkeypatch, capsys):
    from cleo_dask.cli.main import main
    monkeypatch.chdir(SPECS)
    monkeypatch.syspath_prepend(str(SPECS))
    assert main(["validate", "qa.yaml"]) == 0
    out = capsys.readouterr().out
    assert "parameter question (required)" in out and "parameter depth (optional)" in out
    assert 'parameter tone (optional) = "polite" (spec inputs)' in out


@pytest.mark.slow
def test_no_wait_prints_the_run_id_and_the_run_goes_on(cluster_address):
    done = cleo("run", "fanout.yaml", "--address", cluster_address, "--no-wait")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    assert len(run_id) == 16
    with Client(cluster_address, set_as_default=False, timeout=10) as client:
        futures = client.get_dataset(f"cleo-run-{run_id}")
        client.gather(futures, errors="skip")
        assert all(f.status == "finished" for f in futures)
        client.unpublish_dataset(f"cleo-run-{run_id}")


def test_no_wait_needs_a_running_cluster():
    done = cleo("run", "pipeline.yaml", "--no-wait")
    assert done.returncode == 2 and "--no-wait needs a running cluster" in done.stderr


@pytest.mark.slow
def test_run_starts_a_local_cluster_configured_through_dask_config(tmp_path):
    env = env_with_tasks(DASK_CLEO_DASK__LOCAL_CLUSTER__PROCESSES="False",
                         DASK_CLEO_DASK__LOCAL_CLUSTER__N_WORKERS="1")
    done = cleo("run", "pipeline.yaml", env=env)
    assert done.returncode == 0, done.stderr
    assert "3 nodes" in done.stderr and "2 succeeded" in done.stdout


@pytest.mark.slow
def test_unreachable_scheduler_exits_2_within_the_timeout(tmp_path):
    start = time.monotonic()
    done = cleo("run", "pipeline.yaml", "--address", f"tcp://127.0.0.1:{free_port()}", "--connect-timeout", "1")
    assert done.returncode == 2 and "cannot reach tcp://127.0.0.1:" in done.stderr and "within 1 s" in done.stderr
    assert time.monotonic() - start < 30
    # the address may come from Dask's YAML config, the timeout from an environment variable
    port = free_port()
    (tmp_path / "cleo.yaml").write_text(f"cleo_dask:\n  cli:\n    address: tcp://127.0.0.1:{port}\n")
    env = env_with_tasks(DASK_CONFIG=str(tmp_path), DASK_CLEO_DASK__CONNECT_TIMEOUT="1")
    done = cleo("run", "pipeline.yaml", env=env)
    assert done.returncode == 2 and f"cannot reach tcp://127.0.0.1:{port} within 1 s" in done.stderr


@pytest.mark.slow
def test_tls_problems_exit_2(tmp_path):
    done = cleo("run", "pipeline.yaml", "--address", "tls://127.0.0.1:8786", "--tls-ca", tmp_path / "ca.pem",
                "--tls-cert", tmp_path / "me.pem", "--tls-key", tmp_path / "me.key")
    assert done.returncode == 2 and f"TLS file not found: --tls-ca {tmp_path / 'ca.pem'}" in done.stderr
    done = cleo("run", "pipeline.yaml", "--address", "tls://127.0.0.1:8786", "--tls-ca", SPECS / "pipeline.yaml")
    assert done.returncode == 2 and "missing --tls-cert, --tls-key" in done.stderr
    done = cleo("run", "pipeline.yaml", "--address", "tls://127.0.0.1:8786")
    assert done.returncode == 2 and "is a TLS address: give --tls-ca" in done.stderr


@pytest.mark.slow
def test_usage_errors_exit_2_and_no_command_prints_help():
    assert cleo("run").returncode == 2
    assert cleo("run", "pipeline.yaml", "--bogus").returncode == 2
    done = cleo()
    assert done.returncode == 0 and "run" in done.stdout and "validate" in done.stdout and "cluster" in done.stdout


@pytest.mark.slow
def test_progress_bar_on_a_terminal(cluster_address):
    """On a pseudo-terminal ``run`` draws a tqdm bar (carriage returns, n/total, the unit)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cleo_dask_command() + ["run", "fanout.yaml", "--address", cluster_address],
                            cwd=SPECS, env=ENV, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.5)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.wait(30) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "\r" in text and "8/8" in text and "node" in text
    assert "progress: " not in text  # no plain lines on a terminal
    assert "combine" in text and "8 succeeded" in text


@pytest.mark.slow
def test_cluster_over_tls_with_a_scheduler_file(tmp_path):
    """``cleo-dask cluster --tls-*`` then ``cleo-dask run --scheduler-file`` with a client certificate."""
    certs = make_certs(tmp_path / "certs")
    sched_file = tmp_path / "scheduler.json"
    proc = subprocess.Popen(cleo_dask_command() + [
        "cluster", "--workers", "1", "--no-processes", "--port", "0", "--dashboard-address", ":0",
        "--scheduler-file", sched_file] + tls_flags(certs, "scheduler", dask_style=False),
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout.readline().startswith("scheduler: tls://127.0.0.1:")
        assert json.loads(sched_file.read_text())["address"].startswith("tls://")
        done = cleo("run", "pipeline.yaml", "--scheduler-file", sched_file, "--no-progress",
                    *tls_flags(certs, "client", dask_style=False))
        assert done.returncode == 0, done.stderr
        # without a certificate the TLS scheduler is not reachable
        done = cleo("run", "pipeline.yaml", "--scheduler-file", sched_file, "--connect-timeout", "2")
        assert done.returncode == 2 and "is a TLS address" in done.stderr
        # nor with certificates of another CA: the handshake fails, a clear message, no hang
        other = make_certs(tmp_path / "other-ca")
        done = cleo("run", "pipeline.yaml", "--scheduler-file", sched_file, "--connect-timeout", "2",
                    *tls_flags(other, "client", dask_style=False))
        assert done.returncode == 2 and "cannot reach tls://127.0.0.1:" in done.stderr
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "cluster stopped" in out


@pytest.mark.slow
def test_sigterm_cancels_the_run_and_exits_130(cluster_address, tmp_path):
    """``docker stop`` / ``kubectl delete job`` send SIGTERM: the run is cancelled, exit 130."""
    spec = tmp_path / "slow.yaml"
    spec.write_text("agent: {id: a, config: {slow: 3}}\nnodes:\n  - {name: s, task: 'pipeline_tasks:slow'}\n")
    proc = subprocess.Popen(cleo_dask_command() + ["run", str(spec), "--address", cluster_address],
                            cwd=SPECS, env=ENV, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    while not proc.stderr.readline().startswith("run "):  # submitted (other lines: warnings)
        assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted; the run was cancelled" in err


@pytest.mark.slow
def test_json_to_stdout_is_only_json_so_it_pipes_into_jq(cluster_address, tmp_path):
    agent = tmp_path / "agent.json"
    agent.write_text(json.dumps({"id": "cli-agent", "config": {"n": 2}}))
    done = cleo("run", "pipeline_tasks:workflow", "--agent-file", agent, "--address", cluster_address,
                "--json", "-", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["agent"] == "cli-agent"  # the table goes to stderr then
    assert "summarize" in done.stderr and "succeeded" in done.stderr
    done = cleo("run", "pipeline_tasks:workflow", "--agent-file", agent, "--address", cluster_address,
                "--json", "-", "--no-wait")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "submitted"
