"""The launcher's listeners (no cluster needed): what the journal and monitoring hook into."""
from __future__ import annotations

import logging
import threading

from cleo_dask.runs.launch import Launcher
from cleo_dask.runs.registry import RunRegistry


def idle_launcher() -> Launcher:
    """A launcher that never reaches a cluster (only its listeners are used here)."""
    return Launcher(None, None, None, RunRegistry(), threading.Lock(), journal=lambda: None, dashboard_link=lambda: None)


def test_listeners_hear_each_kind_in_the_order_they_were_added():
    launcher = idle_launcher()
    heard = []
    launcher.listeners.append(lambda kind, run: heard.append(("first", kind, run)))
    launcher.listeners.append(lambda kind, run: heard.append(("second", kind, run)))
    launcher.notify("submitted", "run-1")
    assert heard == [("first", "submitted", "run-1"), ("second", "submitted", "run-1")]


def test_a_listener_that_raises_is_logged_and_the_others_still_hear(caplog):
    launcher = idle_launcher()
    heard = []

    def broken(kind, run):
        raise RuntimeError("listener bug")

    launcher.listeners.extend([broken, lambda kind, run: heard.append(kind)])
    with caplog.at_level(logging.ERROR, logger="cleo_dask"):
        launcher.notify("finished", "run-1")
    assert heard == ["finished"]
    assert "listener" in caplog.text and "listener bug" in caplog.text


def test_its_runs_context_reports_the_journal_and_dashboard_when_asked():
    journal = {"now": None}
    launcher = Launcher(None, None, None, RunRegistry(), threading.Lock(),
                        journal=lambda: journal["now"], dashboard_link=lambda: "http://127.0.0.1:8787/status")
    context = launcher.context
    assert context.journal() is None
    journal["now"] = "a journal attached later"   # e.g. cleo-dask resume attaches its store after starting
    assert context.journal() == "a journal attached later"
    assert context.dashboard_link() == "http://127.0.0.1:8787/status"
    assert context.on_finished == launcher.run_finished
