"""What a batch carries: its nodes packed for the scheduler, its outputs sent as one columnar pickle."""
from __future__ import annotations

import pickle

from distributed.protocol import deserialize, serialize, to_serialize

import cleo_dask as cd
from cleo_dask.core.batch import BatchCall, run_batch
from cleo_dask.core.nodeoutput import NodeOutput
from cleo_dask.core.outputs import Outputs
from cleo_dask.core.worker import NodeCall, UnitCall, run_unit
from cleo_dask.failures.retry import RetryPolicy


def double(agent, a=1):
    return 2 * a


def _batch(n: int) -> BatchCall:
    spec = cd.task(double, name="double").spec
    nodes = tuple(NodeCall(f"n{i}", spec, ()) for i in range(n))
    return BatchCall("run-1", "batch-key", nodes, (RetryPolicy(),) * n)


def test_a_batch_output_is_sent_by_dask_as_one_object():
    out = run_batch(_batch(500), None)
    assert isinstance(out, Outputs) and len(out) == 500 and out[3].value == 2
    # what a worker does for another worker's get_data: an exact tuple is sent element by element
    header, frames = serialize(to_serialize(out))
    assert not header.get("is-collection")
    back = deserialize(header, frames)
    assert type(back) is Outputs
    assert [o.meta() for o in back] == [o.meta() for o in out] and [o.value for o in back] == [2] * 500


def test_a_fused_chain_outputs_outputs():
    spec = cd.task(double, name="double").spec
    unit = UnitCall("run-1", "chain", (NodeCall("a", spec, ()), NodeCall("b", spec, (("a", -1, 0),))))
    out = run_unit(unit, None)
    assert type(out) is Outputs and [o.value for o in out] == [2, 4]


def test_outputs_keep_rare_fields_and_missing_times():
    outs = Outputs([NodeOutput(None, "skipped", None, None, None, 0, "condition 'when' is false", ("p",)),
                    NodeOutput({"k": 1}, "succeeded", 1.5, 2.5, "tcp://w", 2)])
    back = pickle.loads(pickle.dumps(outs))
    assert [o.meta() for o in back] == [o.meta() for o in outs] and back[1].value == {"k": 1}
    mixed = Outputs([outs[0], "not an output"])   # anything else pickles as a plain tuple would
    assert pickle.loads(pickle.dumps(mixed))[1] == "not an output"


def test_a_batch_travels_packed_and_runs_where_it_lands():
    """The scheduler only stores and forwards a batch's bytes; the worker unpacks it."""
    from cleo_dask.core.batch import PackedBatch
    batch = _batch(3)
    batch.nodes[1].when = lambda **_: False     # only cloudpickle takes a lambda: the fallback
    packed = pickle.loads(pickle.dumps(batch))
    assert type(packed) is PackedBatch and type(pickle.loads(pickle.dumps(packed))) is PackedBatch
    out = run_batch(packed, None)
    assert [o.status for o in out] == ["succeeded", "skipped", "succeeded"]
