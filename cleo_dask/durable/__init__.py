"""Durable runs: the journal, the result store, resuming after a crash."""
