"""cleo_dask benchmarks: ``python -m benchmarks.<name> [--tiny] [--json FILE]``.

Every benchmark uses :mod:`benchmarks._harness` (cluster start, warm-up, interleaved repetitions,
peak memory of client and workers, JSON lines + a markdown table).
"""
