"""Retry, backoff, time limits, trigger rules and the pure failure decision a Run carries out."""
