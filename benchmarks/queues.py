"""Runs requested through a queue (issue 20): a one-node no-op run per request, end to end.

* ``direct``: the same runs given to ``Engine.submit_many`` (journaled, ``store=``), until every
  run's end is in the journal: the baseline;
* ``queue``: the requests already on the stream, ``engine.consume(queue)`` until every outcome
  message is published (requests/s consumed end to end; target >= 0.8x ``direct``);
* ``latency``: requests published at ``--rate`` per second while a consumer runs: p50/p99 from
  publish to outcome message (its ``sent`` time; one host, one clock).

The broker is started here (``redis-server`` / ``nats-server -js`` in a temp dir) unless ``--url``.

    python -m benchmarks.queues [--tiny] [--broker redis|nats] [--url URL] [--requests 10000]
                                [--rate 200] [--seconds 10] [--max-in-flight 500] [--json FILE]
"""
from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from typing import Any

from . import _harness as h
from ._brokers import Broker

TARGET = "benchmarks.queues:noop"


def noop(agent: Any) -> None:
    """The one node of every run."""
    return None


def _requests(n: int, tag: str) -> list[dict[str, Any]]:
    return [{"id": f"{tag}-{i}", "target": TARGET} for i in range(n)]


def direct(client: Any, store: str, n: int) -> float:
    """Seconds for ``n`` runs through ``submit_many`` until journaled."""
    import cleo_dask as cd
    with cd.Engine(client=client, store=store) as engine:
        t0 = time.perf_counter()
        runs = []
        for i in range(0, n, 100):
            runs += engine.submit_many([{"target": noop, "name": f"d-{j}"} for j in range(i, min(n, i + 100))])
        for run in runs:
            run.result()
            engine.durable.wait_journaled(run.id)
        return time.perf_counter() - t0


def consumed(client: Any, store: str, queue: Any, n: int, max_in_flight: int) -> float:
    """Seconds for ``n`` requests already on the stream to be answered by one consumer."""
    import cleo_dask as cd
    cd.queues.publish_many(queue, _requests(n, uuid.uuid4().hex[:6]))
    with cd.Engine(client=client, store=store) as engine:
        t0 = time.perf_counter()
        counts = engine.consume(queue, limit=n, max_in_flight=max_in_flight)
        took = time.perf_counter() - t0
    assert counts["outcomes"] == n, counts
    return took


async def _paced(queue: Any, n: int, rate: float) -> dict[str, float]:
    from cleo_dask.queues.brokers import open_producer
    producer = open_producer(queue)
    sent: dict[str, float] = {}
    tag = uuid.uuid4().hex[:6]
    try:
        t0 = time.perf_counter()
        for i, req in enumerate(_requests(n, tag)):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[req["id"]] = time.time()
            await producer.send([json.dumps(req).encode()])
    finally:
        await producer.close()
    return sent


def latency(client: Any, store: str, queue: Any, n: int, rate: float, max_in_flight: int) -> dict[str, float]:
    """p50 / p99 / max seconds from publish to outcome message at ``rate`` requests/s."""
    import cleo_dask as cd
    box: dict[str, Any] = {}
    with cd.Engine(client=client, store=store) as engine:
        t = threading.Thread(target=lambda: box.update(counts=engine.consume(queue, limit=n,
                                                                           max_in_flight=max_in_flight)))
        t.start()
        sent = asyncio.run(_paced(queue, n, rate))
        t.join()
    outs = cd.queues.read_outcomes(queue, n, timeout=30)
    lat = sorted(o["sent"] - sent[o["id"]] for o in outs if o["id"] in sent)
    return {"p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "max_ms": 1000 * lat[-1], "answered": len(lat)}


class _Cpu:
    """CPU-seconds of this process (client, scheduler, consumer) and of the worker processes while
    active: the figure that holds when other work shares the cores."""

    def __init__(self, client: Any):
        import os

        import psutil
        self._procs = [psutil.Process()]
        try:   # workers on this host (a remote --address: this process only)
            self._procs += [psutil.Process(p) for p in set(client.run(os.getpid).values()) if p != os.getpid()]
        except (psutil.Error, OSError):
            pass

    def _now(self) -> float:
        total = 0.0
        for p in self._procs:
            try:
                total += sum(p.cpu_times()[:2])
            except Exception:  # noqa: BLE001 - a worker gone meanwhile
                pass
        return total

    def __enter__(self) -> "_Cpu":
        self.seconds, self._t0 = 0.0, self._now()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = self._now() - self._t0


def _queue(url: str, kind: str) -> Any:
    import cleo_dask as cd
    tag = uuid.uuid4().hex[:8]
    if kind == "nats":
        return cd.Queue(url, stream=f"BENCH{tag}", subject=f"bench{tag}.requests", results=f"bench{tag}.results")
    return cd.Queue(url, stream=f"bench-{tag}", results=f"bench-{tag}-results")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0."""
    p = h.parser(__doc__)
    p.add_argument("--broker", choices=["redis", "nats"], default="redis")
    p.add_argument("--url", default=None, help="a running broker (default: start one in a temp dir)")
    p.add_argument("--requests", type=int, default=None, help="requests of the throughput case (default 10,000)")
    p.add_argument("--rate", type=float, default=200.0, help="requests/s of the latency case (default 200)")
    p.add_argument("--seconds", type=float, default=None, help="length of the latency case (default 10)")
    p.add_argument("--max-in-flight", type=int, default=500)
    args = p.parse_args(argv)
    n = args.requests or (200 if args.tiny else 10_000)
    seconds = args.seconds or (1.0 if args.tiny else 10.0)
    where = tempfile.mkdtemp(prefix="cleo-queue-bench-")
    broker = None if args.url else Broker(args.broker, where)
    url = args.url or broker.url
    rows: list[dict[str, Any]] = []
    try:
        with h.cluster(args) as client:
            with _Cpu(client) as cpu_direct:
                t_direct = direct(client, f"{where}/direct.db", n)
            with _Cpu(client) as cpu_queue:
                t_queue = consumed(client, f"{where}/queue.db", _queue(url, args.broker), n, args.max_in_flight)
            rows.append({"case": f"{n} one-node runs", "contender": "direct (submit_many)", "broker": args.broker,
                         "requests_per_s": n / t_direct, "seconds": t_direct, "ratio": 1.0,
                         "cpu_ms_per_run": 1000 * cpu_direct.seconds / n})
            rows.append({"case": f"{n} one-node runs", "contender": "queue (consume)", "broker": args.broker,
                         "requests_per_s": n / t_queue, "seconds": t_queue, "ratio": t_direct / t_queue,
                         "cpu_ms_per_run": 1000 * cpu_queue.seconds / n})
            with _Cpu(client) as cpu_lat:
                lat = latency(client, f"{where}/latency.db", _queue(url, args.broker), int(args.rate * seconds),
                              args.rate, args.max_in_flight)
            rows.append({"case": f"{args.rate:g} requests/s for {seconds:g} s", "contender": "queue (consume)",
                         "broker": args.broker, **lat, "cpu_ms_per_run": 1000 * cpu_lat.seconds / max(1, lat["answered"])})
            h.report(rows, args, "queues", ["case", "contender", "broker", "requests_per_s", "seconds", "ratio",
                                            "p50_ms", "p99_ms", "max_ms", "cpu_ms_per_run"], client)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(where, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
