"""Durable signals: journaled, delivered again on resume, and sent with only the journal (CLI)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import cleo_dask as cd
from cleo_dask.durable.journal import Journal
from cleo_dask.durable.signals import SignalBook

ROOT = Path(__file__).resolve().parent.parent.parent


@cd.task
def draft(agent):
    return "draft"


@cd.task
def combine(agent, legal, editor):
    return [legal, editor]


def two_approvals():
    wf = cd.Workflow("two-approvals")
    d = wf.add(draft)
    wf.add_signal("legal", after=[d])
    wf.add_signal("editor", after=[d])
    wf.add(combine, after=["legal", "editor"])
    return wf


def cli(*args):
    return subprocess.run([sys.executable, "-m", "cleo_dask.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=str(ROOT))


def test_a_signal_recorded_while_no_client_runs_is_delivered_on_resume(client, tmp_path):
    store = tmp_path / "runs.db"
    with cd.Engine(client=client, store=store) as first:
        run = first.submit(two_approvals(), cd.Agent("a"))
        first.signal(run.id, "legal", {"ok": True})
        deadline = time.time() + 30
        while run.progress().get("succeeded", 0) < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert not run.done()   # still waiting for the editor
    # the client is gone: the signal is recorded in the journal only
    sent = cli("signal", run.id, "editor", "--value", json.dumps({"ok": "later"}), "--store", str(store))
    assert sent.returncode == 0, sent.stderr
    assert "delivered when it is resumed" in sent.stderr
    assert SignalBook(str(store)).of_run(run.id) == {"legal": {"ok": True}, "editor": {"ok": "later"}}
    with cd.Engine(client=client, store=store) as again:
        out = again.resume(run.id).result(timeout=60)
    assert out["combine"].value == [{"ok": True}, {"ok": "later"}]


def test_cli_signal_bad_input_exits_2(client, tmp_path):
    store = tmp_path / "runs.db"
    with cd.Engine(client=client, store=store) as engine:
        run = engine.submit(two_approvals(), cd.Agent("a"))
        engine.signal(run.id, "legal", 1)
        engine.signal(run.id, "editor", 2)
        run.result(timeout=60)
        engine.durable.wait_journaled(run.id)
    assert Journal(store).run(run.id).status == "succeeded"
    for args, message in [((run.id, "editor", "--store", str(store)), "already finished"),
                          (("nope", "editor", "--store", str(store)), "no run 'nope'"),
                          ((run.id, "editor", "--value", "{bad", "--store", str(store)), "not JSON"),
                          ((run.id, "editor"), "give --address")]:
        res = cli("signal", *args)
        assert res.returncode == 2 and message in res.stderr, (args, res.stderr)
