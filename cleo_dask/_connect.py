"""Connecting an engine to a running scheduler: a :class:`ClusterError` when it cannot be done."""
from __future__ import annotations

from typing import Any

from distributed import Client

from . import _config
from ._errors import ClusterError
from ._numbers import seconds


def connect(address: str | None, scheduler_file: str | None, security: Any, timeout: Any) -> Client:
    """A ``Client`` of the scheduler at ``address`` (or in ``scheduler_file``) within ``timeout`` s.

    A bad address, an unreachable scheduler or a failed TLS handshake is a :class:`ClusterError`
    naming the address, with Dask's exception as its ``__cause__``.
    """
    if timeout is None:
        timeout = _config.get("connect-timeout", 10)
    timeout = seconds(timeout, "timeout", positive=True)
    if address is not None and (not isinstance(address, str) or not address):
        raise ClusterError(f"the scheduler address must be a string such as 'tcp://host:8786', got {address!r}")
    where = address or f"the scheduler of {scheduler_file}"
    try:
        return Client(address, scheduler_file=scheduler_file, security=security, timeout=timeout,
                      set_as_default=False)
    except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, ValueError (bad address), SSL errors
        raise ClusterError(f"cannot connect to {where} within {timeout:g} s: {type(exc).__name__}: {exc}") from exc
