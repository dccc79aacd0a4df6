"""The compact outcome's columns (runs/columns.py), without a cluster: rows by node number, a
TaskResult made when asked for, counts by status, and the workers' records packed flat."""
from __future__ import annotations

import pickle

from cleo_dask.core.nodeoutput import NodeOutput
from cleo_dask.core.outcome import Attempt, Status, TaskResult
from cleo_dask.runs.columns import CODE, MetaBatch, NodeMetas, OutcomeColumns, Strings, compact_metas, is_plain


def test_a_plain_succeeded_row_gives_back_the_result_it_was_made_from():
    cols = OutcomeColumns(["a", "b"])
    cols.set_plain(0, CODE["succeeded"], 10.0, 12.5, "tcp://w1", None)
    r = cols.result(0, "run-1", fetch=lambda: 42)
    assert (r.node, r.status, r.start, r.end, r.worker, r.run_id) == ("a", Status.SUCCEEDED, 10.0, 12.5, "tcp://w1",
                                                                       "run-1")
    assert r.attempts == (Attempt(1, 10.0, 12.5, "tcp://w1"),)
    assert r.value == 42 and r.duration == 2.5
    assert cols.extra == {}


def test_a_node_with_failed_attempts_keeps_its_whole_result_and_the_columns_its_summary():
    cols = OutcomeColumns(["ok", "bad"])
    failed = TaskResult("bad", Status.FAILED, error=ValueError("boom"), run_id="r",
                        attempts=(Attempt(1, 1.0, 2.0, "w", "ValueError('boom')", "ValueError"),
                                  Attempt(2, 3.0, 4.0, "w", "ValueError('boom')", "ValueError")), start=1.0, end=4.0)
    cols.set_result(1, failed)
    assert cols.result(1, "r") is failed
    assert list(cols.extra) == [1]
    assert (cols.status[1], cols.attempts[1], cols.start[1], cols.end[1]) == (CODE["failed"], 2, 1.0, 4.0)
    assert cols.rows_with([CODE["failed"]]) == [1]


def test_counts_come_from_the_status_column_in_order_of_first_appearance():
    cols = OutcomeColumns([f"n{i}" for i in range(6)])
    for i, status in enumerate(["skipped", "succeeded", "succeeded", "upstream_failed", "succeeded", "cancelled"]):
        cols.set_plain(i, CODE[status], None, None, None, "why" if status != "succeeded" else None)
    assert list(cols.counts().items()) == [("skipped", 1), ("succeeded", 3), ("upstream_failed", 1),
                                           ("cancelled", 1)]
    assert cols.all_in([CODE["succeeded"], CODE["skipped"], CODE["upstream_failed"], CODE["cancelled"]])
    assert not cols.all_in([CODE["succeeded"]])
    assert cols.result(0, None).reason == "why" and cols.result(0, None).attempts == ()


def test_strings_are_stored_once():
    table = Strings()
    assert [table.code(w) for w in ["w1", "w2", "w1", None]] == [0, 1, 0, -1]
    assert table.text(1) == "w2" and table.text(-1) is None


def test_only_results_the_columns_rebuild_exactly_are_plain():
    one = (Attempt(1, 1.0, 2.0, "w"),)
    assert is_plain(TaskResult("a", Status.SUCCEEDED, fetch=lambda: 1, attempts=one, start=1.0, end=2.0, worker="w"))
    assert not is_plain(TaskResult("a", Status.SUCCEEDED, value=5, attempts=one, start=1.0, end=2.0, worker="w"))
    assert not is_plain(TaskResult("a", Status.SUCCEEDED, fetch=lambda: 1, start=1.0, end=2.0, worker="w",
                                   attempts=(Attempt(1, 0.5, 0.7, "w", "boom"), Attempt(2, 1.0, 2.0, "w"))))
    assert not is_plain(TaskResult("a", Status.FELL_BACK, fetch=lambda: 1))
    assert is_plain(TaskResult("a", Status.UPSTREAM_FAILED, reason="upstream 'x' failed"))


class _Worker:
    def __init__(self, data):
        self.data = data


def test_workers_send_the_records_of_the_keys_they_hold_packed_flat():
    single = NodeOutput("big value", "succeeded", 1.0, 2.0, "tcp://w1", 1, None)
    chain = (NodeOutput(1, "succeeded", 3.0, 4.0, "tcp://w1", 2, None),
             NodeOutput(None, "skipped", 4.0, 4.0, "tcp://w1", 1, "when is false", ("p",)))
    keys = ["k-missing", "k-single", "k-chain"]
    batch = pickle.loads(pickle.dumps(compact_metas(keys, dask_worker=_Worker({"k-single": single,
                                                                                "k-chain": chain}))))
    assert dict(batch.metas(keys)) == {"k-single": single.meta(), "k-chain": tuple(o.meta() for o in chain)}
    assert b"big value" not in pickle.dumps(batch)

    metas = NodeMetas(["s", "c1", "c2"])
    units = {"k-single": ("s",), "k-chain": ("c1", "c2")}
    location = {"s": ("k-single", -1), "c1": ("k-chain", 0), "c2": ("k-chain", 1)}
    metas.put_batch(keys, batch, units, location)
    assert "k-chain" in metas and "k-missing" not in metas
    assert metas.meta("c2") == chain[1].meta() and metas.meta("s") == single.meta()
    assert metas.has_upstream(2) and not metas.has_upstream(0)


def test_a_record_of_a_key_a_node_no_longer_lives_under_is_ignored():
    metas = NodeMetas(["a"])
    metas.put("old", ("a",), NodeOutput(1, "succeeded", 1.0, 2.0, "w", 1, None).meta(), {"a": ("new", -1)})
    assert metas.meta("a")[0] == "pending"
    metas.put("new", ("a",), NodeOutput(1, "succeeded", 5.0, 6.0, "w", 2, None).meta(), {"a": ("new", -1)})
    assert metas.meta("a") == ("succeeded", 5.0, 6.0, "w", 2, None, ())


def test_columns_take_a_few_dozen_bytes_per_node():
    cols = OutcomeColumns([f"n{i}" for i in range(10_000)])
    assert cols.nbytes() <= 30 * 10_000
    assert isinstance(MetaBatch(), MetaBatch)
