"""The queue tests' brokers: real ``redis-server`` / ``nats-server -js`` processes (see benchmarks/_brokers.py)."""
from benchmarks._brokers import Broker, available, free_port

__all__ = ["Broker", "available", "free_port"]
