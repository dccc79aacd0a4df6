"""The package's version, in one place below every other module (the public API, the CLI and the
cluster check that compares versions across the client, scheduler and workers all read it)."""

__version__ = "0.1.0"
