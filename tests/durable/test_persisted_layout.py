"""Data persisted by an older cleo_dask: a journal and result store written by the flat module
layout (``cleo_dask._workflow``, ``cleo_dask._worker``...) still resume; a pickle naming a
cleo_dask module this version does not have is refused with a StoreError naming the schema."""
from __future__ import annotations

import dataclasses
import hashlib
import pickle
import shutil
import sqlite3
import struct
from pathlib import Path

import pytest

import cleo_dask as cd
from cleo_dask.durable.journal import Journal
from cleo_dask.durable.resultstore import ResultStore
from cleo_dask.durable.unpickle import current_name, loads

OLD = Path(__file__).resolve().parent.parent / "data" / "old_layout_store"
RUN_ID = (OLD / "RUN_ID").read_text().strip()


def copy_old_store(tmp_path: Path) -> Path:
    """The old store copied to ``tmp_path``, its absolute paths pointed at the copy (as if the
    user had moved the directory)."""
    shutil.copytree(OLD, tmp_path / "store")
    journal = tmp_path / "store" / "runs.db"
    results = str(journal) + ".results"
    with sqlite3.connect(journal) as conn:
        [(old_results,)] = conn.execute("SELECT results FROM journal_runs WHERE id = ?", (RUN_ID,))
        conn.execute("UPDATE journal_runs SET results = ? WHERE id = ?", (results, RUN_ID))
        conn.execute("UPDATE journal_nodes SET result = replace(result, ?, ?) WHERE run_id = ?",
                     (old_results, results, RUN_ID))
    return journal


def set_spec(journal: Path, spec: bytes) -> None:
    with sqlite3.connect(journal) as conn:
        conn.execute("UPDATE journal_runs SET spec = ?, spec_sha256 = ? WHERE id = ?",
                     (spec, hashlib.sha256(spec).hexdigest(), RUN_ID))


def test_old_layout_names_map_to_their_new_modules():
    assert current_name("cleo_dask._workflow", "Workflow") == ("cleo_dask.core.workflow", "Workflow")
    assert current_name("cleo_dask._backoff", "Exponential") == ("cleo_dask.failures.backoff", "Exponential")
    assert current_name("cleo_dask._worker", "NodeOutput") == ("cleo_dask.core.nodeoutput", "NodeOutput")
    assert current_name("cleo_dask.core.worker", "NodeOutput") == ("cleo_dask.core.nodeoutput", "NodeOutput")
    assert current_name("builtins", "dict") == ("builtins", "dict")


def test_a_run_journaled_by_the_flat_layout_resumes(client, tmp_path):
    journal = copy_old_store(tmp_path)
    results = ResultStore(str(journal) + ".results")
    recorded = {n: results.load(results.node_path(RUN_ID, n)) for n in ("first", "second", "third")}
    # `second` failed in that run and its result file is gone: the resume runs it again
    with sqlite3.connect(journal) as conn:
        conn.execute("UPDATE journal_nodes SET status = 'failed', result = NULL WHERE run_id = ? AND node = 'second'",
                     (RUN_ID,))
        conn.execute("UPDATE journal_runs SET status = 'failed' WHERE id = ?", (RUN_ID,))
    Path(results.node_path(RUN_ID, "second")).unlink()

    with cd.Engine(client=client, store=journal) as engine:
        run = engine.resume(RUN_ID)
        outcome = run.result(timeout=60)
        assert outcome.ok
        assert run.resumed_from == {"kept": 2, "again": 1}
        # kept: their old-layout files loaded, values and records as written then
        for node in ("first", "third"):
            assert outcome[node].value == recorded[node].value
            assert outcome[node].start == recorded[node].start
        assert outcome["first"].value == "first(why)"   # the journaled inputs
        # ran again, with the agent and the policies of the old pickle
        assert outcome["second"].value == "second(first(why), s)" == recorded["second"].value
        assert outcome["second"].start > recorded["second"].start
        task = run.workflow.nodes["second"].task
        assert task.retries == 2 and task.timeout == 30
        assert task.backoff == cd.exponential(0.01, max=0.05)
        assert task.fallback is not None and task.fallback.fn.__name__ == "recover"
        assert engine.durable.wait_journaled(RUN_ID)
        assert engine.durable.journal.run(RUN_ID).status == "succeeded"


def test_a_result_file_of_the_flat_layout_is_a_node_output(tmp_path):
    journal = copy_old_store(tmp_path)
    results = ResultStore(str(journal) + ".results")
    path = results.node_path(RUN_ID, "third")
    results.read_output(path)   # its first class, cleo_dask._worker.NodeOutput, is a node output's
    assert results.load(path).value == "third(first(why))"


def test_a_pickle_naming_an_unknown_cleo_dask_module_is_refused(client, tmp_path):
    journal = copy_old_store(tmp_path)
    set_spec(journal, b"ccleo_dask._gone\nWorkflow\n.")   # a GLOBAL of a module no cleo_dask version has
    with cd.Engine(client=client, store=journal) as engine:
        with pytest.raises(cd.StoreError, match="journal schema version 1") as err:
            engine.resume(RUN_ID)
    assert "cleo_dask._gone.Workflow" in str(err.value) and str(journal) in str(err.value)

    with pytest.raises(cd.StoreError, match="journal schema version 1"):
        Journal(journal, create=False).load_spec(RUN_ID)
    set_spec(journal, b"ccleo_dask.core.task\nGone\n.")   # a module that exists, a name it lacks
    with pytest.raises(cd.StoreError, match="cleo_dask.core.task.Gone"):
        Journal(journal, create=False).load_spec(RUN_ID)

    results = ResultStore(str(tmp_path / "results"))
    path = results.node_path("run1", "a")
    results.write(path, b"\x80\x02ccleo_dask._gone\nNodeOutput\n.")
    with pytest.raises(cd.StoreError, match="result files CLEORES1") as err:
        results.load(path)
    assert path in str(err.value)


def test_a_task_spec_sent_by_value_in_the_flat_layout_loads(tmp_path):
    # a spec sent by value keeps its fields as a nested pickle, cleo_dask._task._rebuild_shipped(blob):
    # the names inside the blob are mapped too
    old = Journal(copy_old_store(tmp_path), create=False).load_spec(RUN_ID)["workflow"].nodes["second"].task
    fields = tuple(getattr(old, f.name) for f in dataclasses.fields(old))
    fields = ("old_layout_tasks:second",) + fields[1:]   # the body itself aside: the names matter here
    blob = pickle.dumps(fields, protocol=0)   # text GLOBALs: renamed as the flat layout named them
    for new, flat in (("cleo_dask.failures.backoff", "cleo_dask._backoff"), ("cleo_dask.core.task", "cleo_dask._task")):
        blob = blob.replace(f"c{new}\n".encode(), f"c{flat}\n".encode())
    assert b"ccleo_dask._backoff\n" in blob
    # GLOBAL _rebuild_shipped, BINBYTES blob, TUPLE1, REDUCE, STOP
    outer = b"\x80\x03ccleo_dask._task\n_rebuild_shipped\nB" + struct.pack("<I", len(blob)) + blob + b"\x85R."
    spec = loads(outer, where="test", schema="test")
    assert spec.backoff == old.backoff and spec.retries == 2 and spec.fallback.fn.__name__ == "recover"


def test_an_agent_a_schedule_store_kept_in_the_flat_layout_loads():
    from cleo_dask.schedules.agents import agent_from_bytes as load_agent, agent_to_bytes as dump_agent
    data, fmt = dump_agent(cd.Agent("a", config={"when": {1, 2}}))   # not JSON: kept as a pickle
    assert fmt == "pickle"
    old = pickle.dumps(pickle.loads(data), protocol=0).replace(b"ccleo_dask.core.agent\n", b"ccleo_dask._agent\n")
    assert b"ccleo_dask._agent\n" in old
    assert load_agent(old, fmt) == cd.Agent("a", config={"when": {1, 2}})
