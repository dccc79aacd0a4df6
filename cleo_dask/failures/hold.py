"""Delayed retries held on the scheduler: when a failed attempt comes back, and when it is let go.

A node whose retries wait (a ``backoff``, a ``retry_on`` filter, ``Retry(delay=...)``: anything Dask's
own ``retries=`` cannot do) is retried without its key ever erring: the worker asks the scheduler
to hold the key for the delay and hands the task back (``distributed.Reschedule``).  The key waits
on the scheduler (in ``no-worker``, on no worker: it holds no slot) and its dependents stay
``waiting``; nothing downstream errs.  Two pure decisions, over plain data and an injected clock:

* :func:`retry_delay` (on the worker, at a failure): the delay before the next attempt, or
  ``None`` when this failure is final (the key errs as before and the client's slow path decides
  what follows: fallback, ``on_error``, trigger rules, ``fail_fast``);
* :class:`HeldRetries` (on the scheduler): each held key's release time and the records of its
  earlier failed attempts (handed to the next attempt, so a final failure carries them all);
  the plugin releases a key once its time has come, through the same timer as ``not_before``.
"""
from __future__ import annotations

import random
from typing import Any

from cleo_dask.failures.decide import DecisionKind, FailedAttempt, decide
from cleo_dask.failures.retry import RetryPolicy

#: the per-key annotation that marks a unit whose retries are held on the scheduler (its policy, pickled)
RETRY_ANNOTATION = "cleo_retry"
#: the per-key annotation the scheduler sets on a held key: its earlier failed attempts
HISTORY_ANNOTATION = "cleo_held"
#: the worker-to-scheduler stream message that asks for a hold
HOLD_OP = "cleo-hold-retry"


def holds_retries(policy: RetryPolicy) -> bool:
    """Whether ``policy``'s retries are held on the scheduler: it retries, and not all of its retries
    are Dask's own immediate ``retries=`` (those stay Dask's)."""
    return policy.retries > 0 and not policy.uses_dask_retries


def retry_delay(error: BaseException, failed_attempts: int, policy: RetryPolicy,
                rng: random.Random | None = None) -> float | None:
    """Seconds to hold the key before the attempt after failed attempt number ``failed_attempts``
    (1-based, this one included) of a node under ``policy``; ``None``: this failure is final (the
    retries are used up, or ``retry_on`` does not cover ``error``).  The same rules as
    :func:`~cleo_dask.failures.decide.decide` (which stays the one place that decides)."""
    decision = decide(FailedAttempt(error, failed_attempts), policy, rng=rng)
    if decision.kind is not DecisionKind.RETRY:
        return None
    return max(0.0, float(decision.after))


class HeldRetries:
    """The scheduler's book of held retries: per key, its release time and the records of its
    failed attempts so far (plain tuples, as the worker sent them).  No clock of its own: every
    call that needs the time is given ``now``."""

    def __init__(self) -> None:
        self.until: dict[Any, float] = {}          # key -> release time (epoch s), while held
        self.history: dict[Any, list[tuple]] = {}  # key -> failed attempts' records (until forgotten)

    def hold(self, key: Any, delay: float, record: tuple, now: float) -> tuple[float, list[tuple]]:
        """Hold ``key`` for ``delay`` seconds from ``now`` after a failed attempt (``record``);
        returns the release time and every failed attempt's record so far (the next attempt's
        annotation)."""
        until = now + max(0.0, float(delay))
        self.until[key] = until
        past = self.history.setdefault(key, [])
        past.append(tuple(record))
        return until, list(past)

    def erred(self, key: Any, past: Any) -> list[Any]:
        """``key`` erred (its ``past`` records so far, as its annotation holds them): a failed attempt
        the client may still retry (a lost worker's, ``KilledWorker``); returns its records with a
        ``None`` standing for it, counted by the next attempt but reported by the client itself."""
        out = list(past or ()) + [None]
        self.history[key] = out
        return list(out)

    def is_held(self, key: Any) -> bool:
        """Whether ``key`` waits for its release."""
        return key in self.until

    def released(self, key: Any) -> bool:
        """``key`` was let go (or withdrawn): forget its release time; True if it was held."""
        return self.until.pop(key, None) is not None

    def forget(self, key: Any) -> None:
        """``key`` is gone from the scheduler: forget everything about it."""
        self.until.pop(key, None)
        self.history.pop(key, None)

    def __len__(self) -> int:
        return len(self.until)
