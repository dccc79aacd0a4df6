"""``cleo-dask consume``: run the requests of a message queue (Redis Streams, NATS JetStream).

::

    cleo-dask consume redis://127.0.0.1:6379/0 --stream cleo:requests --group engines \\
        --results cleo:results --store runs.db [--address tcp://scheduler:8786] [--max-in-flight 500]
    cleo-dask consume nats://127.0.0.1:4222 --stream CLEO --subject cleo.requests --results cleo.results ...

Runs until SIGTERM / Ctrl+C (then stops reading; unacknowledged requests stay with the broker for
another engine, or for this one's restart, to resume from the journal).  Exit codes: 0 stopped
by a signal, 2 bad input (URL, options, store, unreachable scheduler).
"""
from __future__ import annotations

import argparse
import threading
from typing import Any

from cleo_dask.cli.common import stop_on_signals, OK, connection_args, engine_from_args, fail, importable_cwd, make_durable
from cleo_dask.cli.types import count_type, seconds_type
from cleo_dask.errors import CleoError


def register(sub: Any) -> None:
    """Add ``consume`` to the ``cleo-dask`` parser."""
    p = sub.add_parser("consume", help="run the requests of a Redis stream or NATS JetStream subject",
                       description="Read run requests (JSON) from a queue in a consumer group, run each as an "
                                   "ordinary journaled run, publish its outcome on --results, then acknowledge it. "
                                   "Runs until SIGTERM/Ctrl+C.")
    p.add_argument("url", help="redis://host:6379/0 or nats://host:4222")
    p.add_argument("--stream", default="cleo:requests", help="the Redis stream, or the JetStream stream name")
    p.add_argument("--subject", help="NATS: the request subject (default: <stream>.requests, lower-case)")
    p.add_argument("--group", default="engines", help="the consumer group (JetStream: durable consumer name)")
    p.add_argument("--results", default="cleo:results", help="the Redis stream / NATS subject of outcomes")
    p.add_argument("--store", required=True, metavar="JOURNAL", help="the run journal (request ids are its "
                   "idempotency keys; share it between the consumers of a group)")
    p.add_argument("--max-in-flight", type=count_type(1), default=None, metavar="N",
                   help="runs at once; no request is read while full (default: cleo_dask.queues.max-in-flight)")
    p.add_argument("--claim-after", type=seconds_type(), default=60.0, metavar="SECONDS",
                   help="a request taken but not acknowledged this long goes to another consumer")
    p.add_argument("--name", help="this consumer's name in the group (default: host-pid-random)")
    connection_args(p)
    p.set_defaults(func=cmd_consume)


def cmd_consume(args: argparse.Namespace) -> int:
    """``cleo-dask consume``."""
    return consume(args)


def consume(args: Any, *, stop: threading.Event | None = None) -> int:
    """Consume ``args.url`` until ``stop`` is set or a signal arrives; the exit code."""
    from cleo_dask.queues.base import Queue
    importable_cwd()
    try:
        queue = Queue(args.url, stream=args.stream, results=args.results, group=args.group, subject=args.subject,
                      claim_after=args.claim_after)
        args.wait_workers = getattr(args, "wait_workers", 0)
        engine = engine_from_args(args)
    except CleoError as exc:
        return fail(str(exc))
    stop = stop or threading.Event()
    with stop_on_signals(stop):
        try:
            make_durable(engine, args.store)
            print(f"cleo-dask consume: {queue.url} stream {queue.stream} group {queue.group} -> {queue.results}",
                  flush=True)
            counts = engine.consume(queue, max_in_flight=args.max_in_flight, stop=stop, name=args.name)
            print("cleo-dask consume: stopping; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), flush=True)
            return OK
        except CleoError as exc:
            return fail(str(exc))
        finally:
            engine.close()
