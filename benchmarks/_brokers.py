"""Real brokers for the queue tests and benchmarks/queues.py: ``redis-server`` and ``nats-server -js`` on free ports, in temp
directories, restartable on the same port with their data (Redis: append-only file, fsync always;
JetStream: file storage)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time


def free_port() -> int:
    """A TCP port free right now (redis-server refuses port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"broker not listening on {port}")


class Broker:
    """A broker process; ``url``; :meth:`restart` keeps its port and data."""

    def __init__(self, kind: str, directory: str):
        self.kind = kind
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0" if self.kind == "redis" else f"nats://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        if self.kind == "redis":
            return [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                    "--dir", self.dir, "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                    "--daemonize", "no", "--loglevel", "warning"]
        return [shutil.which("nats-server") or "nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port),
                "-sd", self.dir]

    def start(self) -> None:
        log = open(os.path.join(self.dir, "broker.log"), "ab")
        self.proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        _wait_port(self.port, self.proc)
        if self.kind == "nats":
            time.sleep(0.3)   # JetStream ready a moment after the port

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, down: float = 0.5) -> None:
        """Stop it (gracefully: data kept), wait ``down`` seconds, start it again on the same port."""
        self.stop()
        time.sleep(down)
        self.start()


def available(kind: str) -> bool:
    return shutil.which("redis-server" if kind == "redis" else "nats-server") is not None
