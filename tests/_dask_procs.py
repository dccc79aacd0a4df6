"""Helpers for tests that run real ``dask scheduler`` / ``dask worker`` / ``cleo-dask`` processes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "tests" / "specs"
MAKE_CERTS = ROOT / "deploy" / "make-certs.sh"


def cleo_dask_command() -> list[str]:
    """The ``cleo-dask`` executable of this interpreter (``python -m cleo_dask.cli`` if not installed)."""
    exe = Path(sys.executable).with_name("cleo-dask")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cleo_dask.cli"]


def dask_command() -> list[str]:
    """The ``dask`` command of this interpreter."""
    exe = Path(sys.executable).with_name("dask")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "dask"]


def env_with_tasks(**extra: str) -> dict[str, str]:
    """The environment with ``tests/specs`` importable (the scheduler and workers need the tasks)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SPECS), str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop("DASK_CLEO_DASK__CLI__ADDRESS", None)
    env.update(extra)
    return env


def env_with_cleo_only(**extra: str) -> dict[str, str]:
    """The environment with only cleo_dask (this checkout) importable: none of the tests' modules."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.pop("DASK_CLEO_DASK__CLI__ADDRESS", None)
    env.update(extra)
    return env


def make_certs(directory: Path) -> Path:
    """Run ``deploy/make-certs.sh`` for real into ``directory``."""
    subprocess.run(["bash", str(MAKE_CERTS), str(directory)], check=True, capture_output=True, timeout=60)
    return directory


def tls_flags(certs: Path, role: str, *, dask_style: bool) -> list[str]:
    """TLS options for ``dask`` (``--tls-ca-file``) or ``cleo-dask`` (``--tls-ca``)."""
    ca = "--tls-ca-file" if dask_style else "--tls-ca"
    return [ca, str(certs / "ca.pem"), "--tls-cert", str(certs / f"{role}.pem"),
            "--tls-key", str(certs / f"{role}-key.pem")]


class Processes:
    """Background processes started by a test, stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=cwd)
        log.close()
        self.procs.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        return (self.logdir / f"{name}.log").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{self.log(n)[-3000:]}" for n, _ in self.procs)

    def stop(self) -> None:
        for _, p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for _, p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)


def wait_for_file(path: Path, procs: Processes, timeout: float = 90) -> dict:
    """The JSON in ``path`` once a process has written it (fails early if a process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass  # being written
        for name, p in procs.procs:
            if p.poll() is not None:
                raise AssertionError(f"{name} exited with {p.returncode}:\n{procs.logs()}")
        time.sleep(0.1)
    raise AssertionError(f"{path} not written within {timeout} s:\n{procs.logs()}")


def have(cmd: str) -> bool:
    """Whether ``cmd`` is on PATH."""
    return shutil.which(cmd) is not None
