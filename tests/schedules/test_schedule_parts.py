"""The parts of the schedules package on their own, without a cluster: the records' states and
outcomes, the store's counts (what ``cleo-dask schedule list`` shows, no SQL in the CLI), the
agent kept in a store, and a :class:`Schedule` handle driven through the loop with a fixed clock.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

import cleo_dask as cd
from cleo_dask.schedules.agents import agent_from_bytes, agent_to_bytes
from cleo_dask.schedules.build import make_options, make_trigger, new_record
from cleo_dask.schedules.loop import Scheduler
from cleo_dask.schedules.records import FIRED, PAUSED, Firing, Outcome, ScheduleState
from cleo_dask.schedules.settings import UNSET, setting
from cleo_dask.schedules.store import ScheduleStore

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc).timestamp()


def noop() -> None:
    """A target for schedules that never run in these tests."""


def test_states_and_outcomes_are_strings_too():
    assert ScheduleState.PAUSED == "paused" and PAUSED == "paused"
    assert f"{ScheduleState.ACTIVE}" == "active" and str(Outcome.MISSED) == "missed"
    assert json.dumps({"outcome": FIRED}) == '{"outcome": "fired"}'


def test_outcome_counts_sum_each_schedules_firings_by_outcome():
    store = ScheduleStore()
    a, b = (new_record(store, noop, None, *make_trigger(T0, every=60), make_options(), name=n, now=T0) for n in "ab")
    store.add(a)
    store.add(b)
    store.commit_tick([], [Firing(a.id, T0, FIRED), Firing(a.id, T0 + 1, FIRED),
                           Firing(a.id, T0 + 2, "missed", "late", count=5), Firing(b.id, T0, "skipped", "busy")],
                      need_lease=False)
    assert store.outcome_counts() == {a.id: {"fired": 2, "missed": 5}, b.id: {"skipped": 1}}
    firings = store.firings(a.id)
    assert [f.outcome for f in firings] == [Outcome.FIRED, Outcome.FIRED, Outcome.MISSED]


def test_a_stored_agent_reads_back_equal():
    agent = cd.Agent("writer", {"topic": "dask"}, max_concurrency=2)
    data, fmt = agent_to_bytes(agent)
    assert fmt == "json" and agent_from_bytes(data, fmt) == agent
    assert agent_from_bytes(None, None) == cd.Agent("default")


def test_unset_options_take_the_config_defaults():
    options = make_options(UNSET, UNSET)
    assert options.misfire_grace == setting("misfire-grace", 60) and options.coalesce is True


def test_a_handle_pauses_resumes_and_cancels_through_the_loop():
    now = [T0]
    loop = Scheduler(ScheduleStore(), lambda *a: pytest.fail("nothing is due"), clock=lambda: now[0], start=False)
    trigger, tz = make_trigger(now[0], every=60)
    record = new_record(loop.store, noop, cd.Agent("a"), trigger, tz, make_options(), name="every-minute",
                        now=now[0], inputs={"x": 1})
    handle = loop.add(record, noop, cd.Agent("a"), inputs={"x": 1})
    assert (handle.name, handle.state, handle.inputs) == ("every-minute", "active", {"x": 1})
    assert loop.get("every-minute") == handle
    handle.pause()
    assert handle.state == "paused" and handle.next_fire_time is None
    now[0] += 150   # two fire times pass while paused
    handle.resume()
    assert handle.state == "active"
    assert [(f.outcome, f.count) for f in handle.firings()] == [("skipped", 2)]
    handle.cancel()
    assert handle.state == "cancelled" and handle.runs() == []
    loop.close()
