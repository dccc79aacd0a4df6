"""The cluster ``cd.Engine()`` starts: the README's Quick start as a first-day user runs it (a
script, ``python -c``, ``python -m``, a notebook), workers that see the user's config and modules,
one clear error when a worker cannot start, and a dashboard that listens on this machine only."""
from __future__ import annotations

import re
import subprocess
import sys

import dask
import nbformat
import psutil
import pytest
from distributed import Worker
from distributed.comm.utils import get_tcp_server_addresses
from nbclient import NotebookClient

import cleo_dask as cd
from _dask_procs import ROOT, cleo_dask_command, env_with_tasks
from cleo_dask.cli.main import build_parser

#: what the Quick start prints: the summary's value and the dashboard's link
EXPECTED = re.compile(r"^NEWS ABOUT DASK http://127\.0\.0\.1:\d+/status$")


def quick_start() -> str:
    """The ```python block under "## Quick start" in README.md, exactly as a user copies it."""
    section = (ROOT / "README.md").read_text().split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def one_worker_env() -> dict[str, str]:
    # the Quick start's Engine() sizes the cluster to the machine; one worker keeps the test light
    # (and shows that config set in the environment reaches the engine's cluster)
    return env_with_tasks(DASK_CLEO_DASK__LOCAL_CLUSTER__N_WORKERS="1")


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["script", "python -c", "python -m"])
def test_the_readme_quick_start_runs_as_written(how, tmp_path):
    code = quick_start()
    (tmp_path / "quickstart.py").write_text(code)
    argv = {"script": ["quickstart.py"], "python -c": ["-c", code], "python -m": ["-m", "quickstart"]}[how]
    done = subprocess.run([sys.executable, *argv], cwd=tmp_path, env=one_worker_env(),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert EXPECTED.match(done.stdout.strip()), done.stdout
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_readme_quick_start_runs_in_a_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("DASK_CLEO_DASK__LOCAL_CLUSTER__N_WORKERS", "1")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(quick_start())])
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    assert not [o for o in outputs if o.output_type == "error"], outputs
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert EXPECTED.match(printed.strip()), printed


@pytest.mark.slow
def test_engine_workers_get_the_users_modules_config_and_options(tmp_path, monkeypatch):
    # a module of the user's, importable here only through sys.path (as a script's own directory is)
    (tmp_path / "my_helpers.py").write_text("def shout(agent):\n    return agent.id.upper() + '!'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_helpers

    with dask.config.set({"my-team.flag": "on", "cleo_dask.io-threads": 7}), \
            cd.Engine(n_workers=1, threads_per_worker=2, memory_limit="1GiB") as engine:
        assert engine.run(my_helpers.shout, cd.Agent("ann")).value == "ANN!"   # pickled by reference
        seen = engine.client.run(lambda: [dask.config.get(k) for k in ("my-team.flag", "cleo_dask.io-threads",
                                                                         "distributed.worker.multiprocessing-method")])
        assert list(seen.values()) == [["on", 7, dask.config.get("distributed.worker.multiprocessing-method")]]
        (worker,) = engine.client.scheduler_info()["workers"].values()
        assert worker["nthreads"] == 2 and worker["memory_limit"] == 2**30
        # the Nanny inside restarts a worker; the scheduler stays in this process
        assert engine.cluster.scheduler.WORKER_SATURATION == float("inf")
        engine.cluster.scale(2)
        engine.client.wait_for_workers(2, timeout=60)
        assert engine.run(my_helpers.shout, cd.Agent("bob")).value == "BOB!"
        pids = engine.client.run(lambda: __import__("os").getpid())
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in pids.values()), "worker processes outlived the engine"


@pytest.mark.slow
def test_a_worker_that_cannot_start_is_one_clear_error(capfd):
    with pytest.raises(cd.CleoError) as info:
        cd.Engine(n_workers=1, memory_limit="lots")
    message = str(info.value)
    assert "\n" not in message
    assert "the worker could not start: ValueError: Could not interpret 'lots' as a byte unit" in message
    assert "cd.Engine(processes=False)" in message          # ... and a way out
    assert "Traceback" not in capfd.readouterr().err


def test_the_engines_scheduler_and_dashboard_listen_on_this_machine_only():
    with cd.Engine(n_workers=1, processes=False) as engine:
        assert all(isinstance(w, Worker) for w in engine.cluster.workers.values())   # threads of this process
        assert dashboard_hosts(engine) == {"127.0.0.1"}
        assert engine.dashboard_link.startswith("http://127.0.0.1:")
    with dask.config.set({"cleo_dask.local-cluster.dashboard-address": "0.0.0.0:0"}), \
            cd.Engine(n_workers=1, processes=False) as engine:     # asked for: every interface
        assert dashboard_hosts(engine) == {"0.0.0.0"}


@pytest.mark.slow
def test_cleo_dask_cluster_serves_its_dashboard_on_this_machine_only():
    assert build_parser().parse_args(["cluster"]).dashboard_address == "127.0.0.1:8787"
    # a free port instead of 8787 (tests run side by side); the host part as by default
    proc = subprocess.Popen(cleo_dask_command() + ["cluster", "--workers", "1", "--no-processes", "--port", "0",
                                                   "--dashboard-address", "127.0.0.1:0"],
                            env=env_with_tasks(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = [proc.stdout.readline().strip() for _ in range(2)]
        info = dict(line.split(": ", 1) for line in lines if ": " in line)
        port = int(re.fullmatch(r"http://127\.0\.0\.1:(\d+)/status", info["dashboard"]).group(1))
        listening = {c.laddr.ip for c in psutil.Process(proc.pid).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        assert listening == {"127.0.0.1"}
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def dashboard_hosts(engine: cd.Engine) -> set[str]:
    """The addresses the scheduler's dashboard server actually listens on."""
    return {addr[0] for addr in get_tcp_server_addresses(engine.cluster.scheduler.http_server)}



@pytest.mark.parametrize("address", ["", "   "])
def test_an_empty_address_is_bad_input_not_a_new_cluster(address):
    """``Engine("")`` (an unset environment variable, say) names the address instead of starting a cluster."""
    with pytest.raises(cd.ClusterError, match="address"):
        cd.Engine(address)
