"""The ``cleo-dask`` command line: one module per command, helpers in ``common``."""
from cleo_dask.cli.main import main

__all__ = ["main"]
