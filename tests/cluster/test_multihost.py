"""cleo-dask run against a real multi-process Dask cluster over TLS.

* loopback: ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1 (always runs);
* multi-host: the scheduler and each worker in its own Linux network namespace (a separate
  network host with its own address, joined by veth pairs to a bridge), ``cleo-dask run`` from a
  fourth namespace.  Needs root and iproute2; skipped with the reason otherwise.

Both use certificates made by ``deploy/make-certs.sh`` and check that the results are right and
that every worker ran tasks (the tasks return the address of the worker they ran on).
"""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from _dask_procs import (SPECS, Processes, cleo_dask_command, dask_command, env_with_tasks, have, make_certs,
                         tls_flags, wait_for_file)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def _run_on_cluster(tmp: Path, certs: Path, *, scheduler_host: str, worker_hosts: list[str],
                    wrap=lambda role, argv: argv) -> dict:
    """Start a TLS scheduler and two workers, run fanout.yaml with cleo-dask; return the JSON results.

    ``wrap(role, argv)`` prefixes each command (e.g. with ``ip netns exec <ns>``); roles are
    ``scheduler``, ``worker-0``, ``worker-1`` and ``client``.
    """
    env = env_with_tasks()
    procs = Processes(tmp)
    sched_file = tmp / "scheduler.json"
    port = "8786" if scheduler_host != "127.0.0.1" else "0"
    try:
        procs.start("scheduler", wrap("scheduler", dask_command() + [
            "scheduler", "--host", scheduler_host, "--port", port, "--protocol", "tls", "--no-dashboard",
            "--scheduler-file", str(sched_file)] + tls_flags(certs, "scheduler", dask_style=True)), env)
        address = wait_for_file(sched_file, procs)["address"]
        assert address.startswith("tls://")
        for i, host in enumerate(worker_hosts):
            procs.start(f"worker-{i}", wrap(f"worker-{i}", dask_command() + [
                "worker", address, "--host", host, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                "--name", f"worker-{i}"] + tls_flags(certs, "worker", dask_style=True)), env)
        out = tmp / "results.json"
        done = subprocess.run(wrap("client", cleo_dask_command() + [
            "run", str(SPECS / "fanout.yaml"), "--scheduler-file", str(sched_file), "--wait-workers", "2",
            "--connect-timeout", "90", "--json", str(out)] + tls_flags(certs, "client", dask_style=False)),
            env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{procs.logs()}"
        assert "combine" in done.stdout and "8 succeeded" in done.stdout
        return json.loads(out.read_text())
    finally:
        procs.stop()


def _check(results: dict, worker_hosts: list[str]) -> None:
    nodes = results["nodes"]
    assert results["status"] == "succeeded" and results["failed"] == []
    assert all(n["status"] == "succeeded" for n in nodes.values())
    combined = nodes["combine"]["value"]
    assert combined["parts"] == 6 and combined["total"] == 6 * sum(range(5))
    # the tasks report where they ran: every worker (host) ran some of them
    ran_on = {n["value"]["worker"] for name, n in nodes.items() if name.startswith("p")}
    assert set(combined["workers"]) == ran_on
    hosts = {a.split("://")[1].rsplit(":", 1)[0] for a in ran_on}
    assert len(ran_on) == 2 and hosts <= set(worker_hosts)
    assert {n["worker"] for name, n in nodes.items() if name.startswith("p")} == ran_on
    assert all(a.startswith("tls://") for a in ran_on)


@pytest.mark.slow
def test_loopback_cluster_over_tls(tmp_path, certs):
    results = _run_on_cluster(tmp_path, certs, scheduler_host="127.0.0.1", worker_hosts=["127.0.0.1", "127.0.0.1"])
    _check(results, ["127.0.0.1"])


# -- separate network hosts (Linux network namespaces) ---------------------------------------------
def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextmanager
def _hosts(n: int):
    """``n`` network namespaces on one bridge (itself in a namespace); yields (names, addresses)."""
    tag = uuid.uuid4().hex[:6]
    subnet = f"10.{200 + int(tag[:2], 16) % 50}.{int(tag[2:4], 16)}"
    switch = f"cleo-sw-{tag}"
    names = [f"cleo-h{i}-{tag}" for i in range(n)]
    made: list[str] = []
    try:
        for ns in [switch, *names]:
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", switch, "link", "add", "name", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        addresses = []
        for i, ns in enumerate(names):
            port, peer = f"p{i}", f"c{tag}{i}"  # interface names: at most 15 characters
            _ip("-n", switch, "link", "add", "name", port, "type", "veth", "peer", "name", peer, "netns", ns)
            _ip("-n", switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", ns, "link", "set", peer, "name", "eth0")
            addr = f"{subnet}.{i + 1}"
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            addresses.append(addr)
        yield names, addresses
    finally:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def _namespaces_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not have("ip"):
        return "iproute2 ('ip') is not installed"
    probe = f"cleo-probe-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        veth = subprocess.run(["ip", "-n", probe, "link", "add", "name", "va", "type", "veth", "peer", "name", "vb"],
                              capture_output=True, text=True)
        if veth.returncode != 0:
            return f"cannot create veth pairs: {veth.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@pytest.mark.netns  # root + iproute2: one network namespace per host
def test_multihost_cluster_over_tls_in_network_namespaces(tmp_path, certs):
    reason = _namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    with _hosts(4) as (names, addrs):
        ns = {"scheduler": names[0], "worker-0": names[1], "worker-1": names[2], "client": names[3]}
        # the hosts see each other, and only over the bridge
        if have("ping"):
            ping = subprocess.run(["ip", "netns", "exec", names[3], "ping", "-c", "1", "-W", "10", addrs[1]],
                                  capture_output=True, text=True)
            assert ping.returncode == 0, f"namespace {names[3]} cannot reach {addrs[1]}: {ping.stdout}{ping.stderr}"
        results = _run_on_cluster(
            tmp_path, certs, scheduler_host=addrs[0], worker_hosts=addrs[1:3],
            wrap=lambda role, argv: ["ip", "netns", "exec", ns[role], *argv])
    _check(results, addrs[1:3])
    assert results["nodes"]["combine"]["worker"].split("://")[1].rsplit(":", 1)[0] in addrs[1:3]
