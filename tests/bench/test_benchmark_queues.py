"""benchmarks/queues.py at a tiny size, so it keeps working (speed is not asserted here)."""
from __future__ import annotations

import json
import shutil

import pytest

from benchmarks import queues

pytestmark = pytest.mark.benchmark  # benchmark smoke tests at tiny size


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed (bash .ci/run)")
def test_queues_tiny(cluster, tmp_path):
    out = tmp_path / "bench.jsonl"
    argv = ["--tiny", "--quiet", "--address", cluster.scheduler_address, "--json", str(out), "--requests", "20",
            "--seconds", "0.2", "--rate", "50"]
    assert queues.main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    contenders = {r.get("contender") for r in rows}
    assert {"direct (submit_many)", "queue (consume)"} <= contenders
    assert any("p99_ms" in r for r in rows) and all(r.get("ratio", 1) > 0 for r in rows)
