"""A client killed (SIGKILL) while a signal node waits, resumed: it keeps the signals already
received and waits again for the others."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cleo_dask as cd
from cleo_dask.durable.journal import Journal
from cleo_dask.durable.signals import SignalBook

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@pytest.fixture
def tasks_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def test_a_killed_client_resumed_keeps_its_signals_and_waits_for_the_others(client, tmp_path, tasks_importable):
    store = tmp_path / "runs.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(HERE / "signal_tasks.py"), str(store)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        run_id = proc.stdout.readline().strip()
        assert run_id, "the first client did not start its run"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert Journal(store).nodes(run_id)["legal"].status == "succeeded"
    assert SignalBook(str(store)).of_run(run_id) == {"legal": {"ok": True}}

    with cd.Engine(client=client, store=store) as again:
        run = again.resume(run_id)
        deadline = time.time() + 30
        while run.progress()["done"] < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert run.progress()["done"] == 2                  # draft and the legal signal, kept
        assert not run.wait(timeout=1)                      # waiting again for the editor
        again.signal(run_id, "editor", {"ok": "later"})
        out = run.result(timeout=60)
    assert out["combine"].value == [{"ok": True}, {"ok": "later"}]
    assert out["legal"].value == {"ok": True}
