"""Runs whose client has gone: carried by a run host on the scheduler (``cleo-dask run --no-wait``,
``Engine.submit(..., detach=True)``), read back with ``Engine.attach`` / ``cleo-dask runs show``."""
