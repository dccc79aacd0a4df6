"""benchmarks/cli.py at a tiny size: every contender ran (speed is not asserted here)."""
from __future__ import annotations

import json

import pytest

from benchmarks import cli

pytestmark = pytest.mark.benchmark  # benchmark smoke tests at tiny size


def test_cli_benchmark_smoke(tmp_path, capsys):
    out = tmp_path / "bench.jsonl"
    assert cli.main(["--tiny", "--quiet", "--in-process", "--json", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by = {(r["case"], r.get("contender")): r for r in rows}
    for contender in ("raw", "cleo-run", "cleo-validate"):
        row = by[("fanout-10", contender)]
        assert "error" not in row and row["median_s"] > 0 and row["ratio"] > 0
    assert by[("load_spec-100", "cleo")]["tasks"] == 102
    assert "| fanout-10 | cleo-run |" in capsys.readouterr().out
