"""Shared fixtures: real Dask clusters (in-process for speed unless a test needs processes)."""
from __future__ import annotations

import dask
import pytest
from distributed import Client, LocalCluster

import cleo_dask as cd
from cleo_dask.admission.cluster_needs import scheduler_settings


@pytest.fixture(scope="session")
def cluster():
    """One in-process LocalCluster (2 workers x 1 thread) for the session."""
    with dask.config.set(scheduler_settings()):   # read once, when the scheduler starts
        c = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0")
    with c:
        yield c


@pytest.fixture(scope="session")
def client(cluster):
    """A client of the session's cluster."""
    with Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture
def engine(client):
    """An engine on the session's cluster (it does not close the client)."""
    with cd.Engine(client=client) as e:
        yield e


@pytest.fixture
def agent():
    """A plain agent."""
    return cd.Agent("researcher-1", config={"topic": "dask"})
