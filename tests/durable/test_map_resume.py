"""Mapped nodes are durable (issue 19): a client killed mid-map (SIGKILL) and resumed keeps the
items that finished (not run again) and runs the rest."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import durable_tasks as dt
import pytest

import cleo_dask as cd
from cleo_dask.durable.journal import Journal

from test_durable import HERE, env_for_subprocess, log_lines


@pytest.mark.slow
def test_a_killed_client_resumes_a_map_without_rerunning_finished_items(engine, tmp_path):
    store, log = tmp_path / "runs.db", tmp_path / "exec.log"
    proc = subprocess.Popen([sys.executable, str(HERE / "durable_tasks.py"), "mapcrash", str(store), str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env_for_subprocess())
    try:
        run_id = proc.stdout.readline().strip()
        deadline = time.time() + 120
        while sum(log_lines(log).values()) < 12 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    before = log_lines(log)
    items_before = {n for n in before if n.startswith("item-")}
    assert 5 <= len(items_before) < 40, "the kill came too late (or too early) to test anything"
    assert [r.id for r in Journal(store).runs(status="interrupted")] == [run_id]

    with cd.Engine(client=engine.client, store=store) as again:
        out = again.resume(run_id).result(timeout=120)
    assert out["add_items"].value == sum(i * i for i in range(40))
    assert out["slow_item"].children == tuple(f"slow_item[{i}]" for i in range(40))
    ran = log_lines(log)
    assert {f"item-{i}" for i in range(40)} <= set(ran)                       # every item ran
    assert ran["plan_items"] == 1                                             # the plan was kept
    again_ran = sum(ran[n] - 1 for n in items_before)
    assert again_ran <= 2, f"{again_ran} finished items ran again (at most the 2 in flight may)"
