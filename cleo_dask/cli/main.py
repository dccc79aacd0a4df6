"""The ``cleo-dask`` command line.

Each command lives in its own module exposing ``register(subparsers)`` (what they share is in
``cli.common``); the chosen subcommand's ``func(args) -> int`` is the exit code.  Exit codes:
0 success, 1 some task failed, 2 bad input (spec, arguments, unreachable scheduler, ...),
130 interrupted.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from cleo_dask import __version__

#: Modules that add subcommands (each has ``register(subparsers)``).
COMMAND_MODULES: list[str] = ["cleo_dask.cli.run", "cleo_dask.cli.validate", "cleo_dask.cli.cluster",
                               "cleo_dask.cli.runs", "cleo_dask.cli.resume", "cleo_dask.cli.serve",
                               "cleo_dask.cli.schedule", "cleo_dask.cli.signal",
                               "cleo_dask.cli.consume"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="cleo-dask", description="Run AI agents' tasks on Dask.")
    parser.add_argument("--version", action="version", version=f"cleo-dask {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cleo-dask``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        code = int(func(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader went away (`cleo-dask runs list | head -1`): stop quietly, as shell tools do,
        # with the shell's code for a SIGPIPE; no traceback, and nothing more to flush at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
