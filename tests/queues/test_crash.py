"""1,000 requests through two ``cleo-dask consume`` processes sharing a journal: one is killed with
SIGKILL mid-way and the broker restarts once; every request still has exactly one run and one
outcome message (the dead consumer's requests are claimed and resumed from the journal)."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import dask
import pytest
from distributed import LocalCluster

import cleo_dask as cd
from cleo_dask.admission.cluster_needs import scheduler_settings
from cleo_dask.queues import read_outcomes
from cleo_dask.queues.request import run_id_for

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
N = 1000


@pytest.fixture(scope="module")
def tcp_cluster():
    """A cluster the consumer processes reach over TCP (its workers in this process import queue_tasks)."""
    with dask.config.set(scheduler_settings()):
        c = LocalCluster(n_workers=2, threads_per_worker=2, processes=False, protocol="tcp",
                         host="127.0.0.1", dashboard_address=None)
    with c:
        yield c


def start_consumer(queue, store, address, name):
    args = [sys.executable, "-m", "cleo_dask.cli", "consume", queue.url, "--stream", queue.stream,
            "--group", queue.group, "--results", queue.results, "--store", store, "--address", address,
            "--max-in-flight", "100", "--claim-after", "2", "--name", name]
    if queue.subject:
        args += ["--subject", queue.subject]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]),
               DASK_CLEO_DASK__MONITOR__ENABLED="false")
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=open(f"{store}.{name}.log", "wb"))


def answered(store: str) -> int:
    """Outcomes the consumers recorded as published (their ledger, in the journal file)."""
    if not os.path.exists(store):
        return 0
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM queue_outcomes").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def wait_for(store, n, timeout, procs):
    deadline = time.monotonic() + timeout
    while answered(store) < n:
        assert time.monotonic() < deadline, f"only {answered(store)} of {n} answered"
        for p in procs:
            assert p.poll() is None or p.returncode == -signal.SIGKILL, f"a consumer exited with {p.returncode}"
        time.sleep(0.1)


@pytest.mark.slow   # about 20-30 s per broker on a shared 2-core machine
def test_kill_a_consumer_and_restart_the_broker(tcp_cluster, broker, queue, tmp_path):
    store = str(tmp_path / "runs.db")
    cd.queues.publish_many(queue, [{"id": f"req-{i}", "target": "queue_tasks:echo", "inputs": {"x": i}}
                                   for i in range(N)])
    a = start_consumer(queue, store, tcp_cluster.scheduler_address, "a")
    b = start_consumer(queue, store, tcp_cluster.scheduler_address, "b")
    try:
        wait_for(store, N // 4, 180, [a, b])
        a.send_signal(signal.SIGKILL)    # its taken, unacknowledged requests: claimed by b after 2 s
        a.wait()
        wait_for(store, N // 2, 180, [b])
        broker.restart()
        wait_for(store, N, 180, [b])
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (a, b):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:   # never leave a consumer behind
                p.kill()
                p.wait()
    outcomes = read_outcomes(queue, N + 10, timeout=3)
    ids = [o["id"] for o in outcomes]
    assert len(ids) == N and set(ids) == {f"req-{i}" for i in range(N)}, "one outcome message per request"
    assert all(o["status"] == "succeeded" and o["results"] == {"echo": int(o["id"][4:])} for o in outcomes)
    with sqlite3.connect(store) as conn:
        runs = dict(conn.execute("SELECT id, status FROM journal_runs").fetchall())
    assert runs == {run_id_for(f"req-{i}"): "succeeded" for i in range(N)}, "one run per request"
