"""What the command line costs: ``cleo-dask run SPEC`` against a raw Dask script, both as new
processes on the same running cluster, plus spec loading and validation on their own.

Case ``fanout-N``: one root, N parts after it, one sink (no-op tasks).  Contenders, interleaved:

* ``raw``: ``python -c <script>``: import distributed, connect, ``client.get`` of the same graph
  as a dict (the baseline of every ratio);
* ``cleo-run``: ``cleo-dask run spec.yaml --address ... --no-progress`` (load and validate the
  spec, connect, submit, wait, summary table);
* ``cleo-validate``: ``cleo-dask validate spec.yaml`` (no cluster at all).

Then ``load_spec`` in this process for 1,000 and 10,000 nodes (schema, import paths, graph).

    python -m benchmarks.cli [--tiny] [--json FILE] [--reps N] [--in-process] [--address tcp://...]
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from . import _harness as h

ROOT = Path(__file__).resolve().parent.parent
TASK = "benchmarks._shapes:agent_noop"

RAW_SCRIPT = """
import sys
from distributed import Client
from benchmarks._shapes import noop
address, n = sys.argv[1], int(sys.argv[2])
dsk = {"root": (noop,)}
dsk.update({f"p{i}": (noop, "root") for i in range(n)})
dsk["sink"] = (noop, *[f"p{i}" for i in range(n)])
with Client(address, set_as_default=False) as client:
    client.get(dsk, ["sink"])
"""


def write_spec(path: Path, n: int) -> Path:
    """A fan-out spec: ``root``, ``p0..p{n-1}`` after it, ``sink`` after them all."""
    nodes = [{"name": "root", "task": TASK}]
    nodes += [{"name": f"p{i}", "task": TASK, "after": ["root"]} for i in range(n)]
    nodes.append({"name": "sink", "task": TASK, "after": [f"p{i}" for i in range(n)]})
    path.write_text(yaml.safe_dump({"name": f"fanout-{n}", "agent": {"id": "bench"}, "nodes": nodes},
                                   sort_keys=False))
    return path


def _cleo() -> list[str]:
    exe = Path(sys.executable).with_name("cleo-dask")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cleo_dask.cli"]


def _subprocess(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited {done.returncode}: {done.stderr[-500:]}")


def contenders(address: str, spec: Path, n: int, env: dict[str, str]) -> dict[str, h.Contender]:
    """raw / cleo-run / cleo-validate for one size."""
    return {
        "raw": h.Contender(lambda _: _subprocess([sys.executable, "-c", RAW_SCRIPT, address, str(n)], env)),
        "cleo-run": h.Contender(lambda _: _subprocess(_cleo() + ["run", str(spec), "--address", address,
                                                                  "--no-progress"], env)),
        "cleo-validate": h.Contender(lambda _: _subprocess(_cleo() + ["validate", str(spec)], env),
                                     note="no cluster"),
    }


def load_rows(sizes: list[int], tmp: Path) -> list[dict[str, Any]]:
    """Seconds to load and fully validate specs of ``sizes`` nodes, in this process."""
    from cleo_dask.core.spec import load_spec
    rows = []
    for n in sizes:
        spec = write_spec(tmp / f"load-{n}.yaml", n)
        t, loaded = h.timed(lambda: load_spec(spec))
        assert len(loaded.workflow) == n + 2
        rows.append({"case": f"load_spec-{n}", "contender": "cleo", "tasks": n + 2, "median_s": round(t, 4),
                     "per_task_ms": round(1000 * t / (n + 2), 4), "note": "in process, one run"})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0."""
    args = h.parser(__doc__).parse_args(argv)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop("DASK_CLEO_DASK__CLI__ADDRESS", None)
    rows: list[dict[str, Any]] = []
    # tcp even in process: the contenders are other processes
    with tempfile.TemporaryDirectory() as tmp, h.cluster(args, protocol="tcp://") as client:
        address = client.scheduler.address
        for n in ([10] if args.tiny else [100, 1000]):
            spec = write_spec(Path(tmp) / f"fanout-{n}.yaml", n)
            rows += h.compare(f"fanout-{n}", contenders(address, spec, n, env), args, tasks=n + 2,
                              baseline="raw", default_reps=3)
        rows += load_rows([100] if args.tiny else [1000, 10_000], Path(tmp))
        h.report(rows, args, "cli", ["case", "contender", "tasks", "median_s", "min_s", "per_task_ms", "ratio", "note"],
                 client=client, title="cli: `cleo-dask run` vs a raw Dask script, new processes (ratio = median / raw)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
