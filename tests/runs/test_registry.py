"""The engine's run registry: running runs held strongly, finished ones weakly (no cluster needed)."""
from __future__ import annotations

import gc

import pytest

from cleo_dask.runs.registry import RunRegistry


class FakeRun:
    """Stands in for a Run: the registry only holds objects by id (a weak reference needs a class)."""

    def __init__(self, run_id: str):
        self.id = run_id


def test_a_running_run_is_held_even_when_nobody_else_holds_it():
    registry = RunRegistry()
    registry["a"] = FakeRun("a")   # fire and forget: the caller keeps nothing
    gc.collect()
    assert registry["a"].id == "a"
    assert list(registry) == ["a"] and len(registry) == 1


def test_a_finished_run_stays_while_the_user_holds_it():
    registry = RunRegistry()
    run = FakeRun("a")
    registry["a"] = run
    registry.finished("a")
    gc.collect()
    assert registry["a"] is run and "a" in registry


def test_a_finished_run_nobody_holds_is_forgotten():
    registry = RunRegistry()
    registry["a"] = FakeRun("a")
    registry.finished("a")
    gc.collect()
    assert "a" not in registry and len(registry) == 0
    with pytest.raises(KeyError):
        registry["a"]


def test_finishing_an_unknown_or_already_finished_run_changes_nothing():
    registry = RunRegistry()
    run = FakeRun("a")
    registry["a"] = run
    registry.finished("a")
    registry.finished("a")
    registry.finished("nope")
    assert registry.alive() == [run]


def test_alive_lists_running_and_finished_runs_still_in_memory():
    registry = RunRegistry()
    running, done, dropped = FakeRun("r"), FakeRun("d"), FakeRun("x")
    registry["r"], registry["d"], registry["x"] = running, done, dropped
    registry.finished("d")
    registry.finished("x")
    del dropped
    gc.collect()
    assert registry.alive() == [running, done]
    assert sorted(registry) == ["d", "r"]


def test_a_resumed_run_is_held_strongly_again_under_its_id():
    registry = RunRegistry()
    first = FakeRun("a")
    registry["a"] = first
    registry.finished("a")
    again = FakeRun("a")
    registry["a"] = again          # a resume registers a new Run of the same id
    del first
    gc.collect()
    assert registry["a"] is again and list(registry) == ["a"] and len(registry) == 1


def test_hold_all_weakly_keeps_only_runs_referenced_elsewhere():
    registry = RunRegistry()
    kept = FakeRun("kept")
    registry["kept"] = kept
    registry["lost"] = FakeRun("lost")
    registry.hold_all_weakly()     # the engine is closing
    gc.collect()
    assert registry.alive() == [kept] and list(registry) == ["kept"]


def test_deleting_a_run_forgets_it_whether_running_or_finished():
    registry = RunRegistry()
    running, done = FakeRun("r"), FakeRun("d")
    registry["r"], registry["d"] = running, done
    registry.finished("d")
    del registry["r"]
    del registry["d"]
    assert len(registry) == 0
    with pytest.raises(KeyError):
        del registry["r"]
