"""Monitoring: the scheduler-side state plugin, the dashboard page and its pictures, metrics, logs, progress."""
