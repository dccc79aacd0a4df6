"""Smoke test of ``python -m benchmarks.monitor`` at tiny size."""
from __future__ import annotations

import json

import pytest

from benchmarks import monitor

pytestmark = pytest.mark.benchmark  # benchmark smoke tests at tiny size


def test_monitor_benchmark_tiny(tmp_path, capsys):
    out = tmp_path / "monitor.jsonl"
    assert monitor.main(["--tiny", "--in-process", "--quiet", "--json", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    found = {(r["case"], r.get("contender")) for r in rows}
    assert {("fanout-50", "raw"), ("fanout-50", "cleo-off"), ("fanout-50", "cleo-on"), ("fanout-50", "cleo-on+page")} <= found
    assert all("error" not in r for r in rows)
    assert "| case | contender |" in capsys.readouterr().out
