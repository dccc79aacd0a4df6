"""A journal that cannot be written is never silent (issue 15, item 3).

The full disk is real: a small tmpfs mounted for the test and filled up (skipped, saying so, only
where mounting is impossible: not root, or no ``mount``).
"""
from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import cleo_dask as cd
from cleo_dask.durable.journal import Journal

HERE = Path(__file__).resolve().parent.parent  # tests/: the helper modules and data


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs of its own: a disk the test can fill without touching the machine's."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a full filesystem needs a small tmpfs, and mounting one needs root")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True,
                              text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("no mount command: cannot make a small filesystem to fill")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fill(disk: Path) -> None:
    """Write until the filesystem says it is full."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for block in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


def greet(agent, who: str = "world") -> str:
    return f"hello {who}"


def shout(agent, wait_for_go: str) -> str:
    return wait_for_go.upper()


def wait_for_go(agent) -> str:
    """Runs until the test creates the file ``agent.config["go"]``."""
    deadline = time.monotonic() + 60
    while not os.path.exists(agent.config["go"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return "went"


def test_submit_refuses_a_run_the_journal_cannot_record(client, small_disk, tmp_path):
    store = cd.RunStore(str(small_disk / "runs.db"), results=str(tmp_path / "results"))
    with cd.Engine(client=client, store=store) as engine:
        first = engine.submit(greet)  # held: a finished run the user drops is freed
        assert first.result(timeout=60).durable  # journaled to its end while there is room
        fill(small_disk)
        with pytest.raises(cd.StoreError, match="disk is full") as err:
            engine.submit(cd.task(greet, name="greet_on_a_full_disk"))
        assert str(small_disk / "runs.db") in str(err.value)
        # nothing was submitted: no run in the engine, no task on the scheduler
        assert len(engine.runs_in_memory) == 1
        keys = client.run_on_scheduler(lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks])
        assert not [k for k in keys if "greet_on_a_full_disk" in k]
        with pytest.raises(cd.StoreError, match="disk is full"):
            engine.submit_many([{"target": greet}, {"target": greet, "inputs": {"who": "you"}}])
        assert len(engine.runs_in_memory) == 1
        os.remove(small_disk / "filler")
        later = engine.submit(greet)  # room again: journaled as usual
        assert later.result(timeout=60).durable
        assert {r.status for r in engine.runs()} == {"succeeded"} and len(engine.runs()) == 2


def test_a_journal_write_failing_mid_run_is_warned_once_and_marks_the_outcome(client, small_disk, tmp_path,
                                                                              caplog):
    store = cd.RunStore(str(small_disk / "runs.db"), results=str(tmp_path / "results"))
    go = tmp_path / "go"
    wf = cd.Workflow.chain(wait_for_go, shout)
    with cd.Engine(client=client, store=store) as engine, caplog.at_level(logging.WARNING, logger="cleo_dask"):
        run = engine.submit(wf, cd.Agent("a", config={"go": str(go)}))
        assert [r.id for r in engine.runs()] == [run.id]  # recorded before it was submitted
        fill(small_disk)
        go.touch()
        outcome = run.result(timeout=60)
        assert outcome.ok and outcome["shout"].value == "WENT"  # the run itself goes on
        assert outcome.durable is False
        assert "disk is full" in outcome.durable_reason and str(small_disk / "runs.db") in outcome.durable_reason
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and run.id in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "not durable" in warnings[0].getMessage()
    assert Journal(store.journal).run(run.id).status == "running"  # what the journal could keep


def test_a_durable_outcome_says_so(durable_engine):
    outcome = durable_engine.submit(greet).result(timeout=60)
    assert outcome.durable is True and outcome.durable_reason is None


def test_an_outcome_without_a_store_is_not_durable(engine):
    outcome = engine.submit(greet).result(timeout=60)
    assert outcome.durable is False and "Engine(store=" in outcome.durable_reason


@pytest.fixture
def durable_engine(client, tmp_path):
    with cd.Engine(client=client, store=tmp_path / "runs.db") as e:
        yield e


@pytest.mark.slow
def test_an_empty_journal_file_is_not_taken_for_a_new_journal(client, tmp_path):
    empty = tmp_path / "runs.db"
    empty.write_bytes(b"")  # e.g. truncated by a full disk: its runs are gone
    with pytest.raises(cd.StoreError, match="empty file") as err:
        cd.Engine(client=client, store=empty)
    assert str(empty) in str(err.value) and "remove the file" in str(err.value)
    listed = subprocess.run([sys.executable, "-m", "cleo_dask.cli", "runs", "list", "--store", str(empty)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])})
    assert listed.returncode == 2 and "empty file" in listed.stderr and "Traceback" not in listed.stderr
    assert empty.stat().st_size == 0  # left as found

    empty.unlink()  # as the message says: a new journal there
    with cd.Engine(client=client, store=empty) as engine:
        assert engine.runs() == []


def test_a_journal_that_cannot_be_created_leaves_no_empty_file(client, small_disk):
    fill(small_disk)
    with pytest.raises(cd.StoreError, match="disk is full"):
        cd.Engine(client=client, store=small_disk / "new.db")
    assert not (small_disk / "new.db").exists()  # not an empty file refused as truncated later
    os.remove(small_disk / "filler")
    with cd.Engine(client=client, store=small_disk / "new.db") as engine:
        assert engine.runs() == []


def test_engines_creating_one_journal_at_once_do_not_see_it_empty(tmp_path):
    path = tmp_path / "shared.db"
    errors = []

    def open_it():
        try:
            Journal(path).runs()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
