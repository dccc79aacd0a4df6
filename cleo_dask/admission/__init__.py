"""Scheduler-side admission: concurrency caps, rate limits, fair share, estimates, I/O slots."""
