"""Requests read and checked without a broker or a cluster (pure), and the consume command's bad input."""
from __future__ import annotations

import pytest

import cleo_dask as cd
from cleo_dask.cli import main
from cleo_dask.queues.request import BadRequest, parse, run_id_for


def test_a_request_is_read_with_its_defaults():
    req = parse(b'{"id": "r1", "target": "pkg.mod:flow", "inputs": {"q": 1}}')
    assert (req.id, req.target, req.inputs, req.priority, req.agent) == ("r1", "pkg.mod:flow", {"q": 1}, 0.0, None)
    assert req.run_id == run_id_for("r1") and len(req.run_id) == 16 and req.run_id.startswith("q")
    assert run_id_for("r1") != run_id_for("r2")


@pytest.mark.parametrize("body, words", [
    (b"{oops", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"target": "a:b"}', "'id'"),
    (b'{"id": "x"}', "'target'"),
    (b'{"id": "x", "target": "no_colon"}', "'target'"),
    (b'{"id": "x", "target": "a:b", "agent": 3}', "'agent'"),
    (b'{"id": "x", "target": "a:b", "inputs": [1]}', "'inputs'"),
    (b'{"id": "x", "target": "a:b", "priority": "high"}', "'priority'"),
    (b'{"id": "x", "target": "a:b", "colour": "red"}', "colour"),
])
def test_bad_requests_name_what_is_wrong(body, words):
    with pytest.raises(BadRequest, match=words) as info:
        parse(body)
    assert isinstance(info.value, cd.WorkflowError)


def test_consume_with_a_bad_url_is_bad_input(tmp_path, capsys):
    assert main(["consume", "amqp://127.0.0.1", "--store", str(tmp_path / "runs.db")]) == 2
    assert "redis://" in capsys.readouterr().err


def test_consume_is_a_command(capsys):
    with pytest.raises(SystemExit):
        main(["consume", "--help"])
    out = capsys.readouterr().out
    assert "--max-in-flight" in out and "--group" in out and "--results" in out
