"""Fixtures of the queue tests: a real broker of each kind per session, a fresh stream per test."""
from __future__ import annotations

import os
import uuid

import pytest

from brokers import Broker, available

import cleo_dask as cd


@pytest.fixture(scope="session", params=["redis", "nats"])
def broker(request, tmp_path_factory):
    """A running ``redis-server`` or ``nats-server -js`` (skipped when not installed: ``bash .ci/run`` installs both)."""
    if not available(request.param):
        if os.environ.get("CI"):   # CI runs .ci/run, which installs both: missing there is a failure
            pytest.fail(f"{request.param} server not installed although CI is set (.ci/run installs it)")
        pytest.skip(f"{request.param} server not installed (bash .ci/run installs it)")
    b = Broker(request.param, str(tmp_path_factory.mktemp(request.param)))
    yield b
    b.stop()


@pytest.fixture
def queue(broker):
    """A queue of its own on the session's broker (names unique per test), claimed after 2 s."""
    tag = uuid.uuid4().hex[:8]
    if broker.kind == "redis":
        return cd.Queue(broker.url, stream=f"req-{tag}", results=f"res-{tag}", group="engines", claim_after=2)
    return cd.Queue(broker.url, stream=f"REQ{tag}", subject=f"req{tag}.requests", results=f"res{tag}.results",
                    group="engines", claim_after=2)
