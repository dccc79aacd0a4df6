"""The failure decision: what a run does when one of its nodes' attempts failed.

One pure function, :func:`decide`, over plain data (no Dask, no clock, no I/O): the failed
attempt (:class:`FailedAttempt`), the node's retry policy and its options (fallback, on_error,
the run's fail_fast).  It returns a :class:`Decision`; the run only carries it out.

The order, first match wins:

1. **retry** — the attempt is not final and the policy retries this error: wait ``after`` seconds,
   run attempt ``attempt`` (a failed fallback, an attempt without an error, a crash that was not a
   lost worker, and failures Dask's own ``retries=`` already retried are final);
2. otherwise the node has failed for good; the task's ``on_error`` is called first (``notify``),
   except for a failed fallback; then
3. **fail the run** with ``fail_fast``: the node fails, the rest of the run is cancelled;
4. **fallback**: the node has one (and this was not it) and the error is not a :class:`CodeError`
   (the cluster could not load the code: a fallback would not load either);
5. **fail** the node: the trigger rules decide what happens below it (:func:`propagate`).
"""
from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cleo_dask.errors import CodeError
from cleo_dask.failures.retry import RetryPolicy
from cleo_dask.failures.rules import ALL_SUCCESS, skip_decision


class DecisionKind(enum.Enum):
    """What to do about a failed attempt."""

    RETRY = "retry"          #: run the node again after ``Decision.after`` seconds
    FAIL_RUN = "fail_run"    #: fail_fast: the node fails and the rest of the run is cancelled
    FALLBACK = "fallback"    #: run the node's fallback in its place
    FAIL = "fail"            #: the node fails; trigger rules apply to its descendants


@dataclass(frozen=True)
class FailedAttempt:
    """A node's failed attempt, as plain data.

    ``failed_attempts`` counts the node's failed attempts so far, this one included (1-based);
    ``crashed``: the task could not run at all (its worker died, it could not be unpickled, ...);
    ``worker_losses``: how often a worker died running it (``KilledWorker``: retried as the policy
    says); ``fallback``: the attempt that failed was the node's fallback.
    """

    error: BaseException | None
    failed_attempts: int = 1
    crashed: bool = False
    worker_losses: int = 0
    fallback: bool = False


@dataclass(frozen=True)
class Decision:
    """What :func:`decide` chose: ``kind``; for ``RETRY`` the wait (``after``, seconds) and the
    number of the attempt to come (``attempt``); ``notify``: call the task's ``on_error`` first."""

    kind: DecisionKind
    after: float = 0.0
    attempt: int = 0
    notify: bool = False


def decide(failure: FailedAttempt, policy: RetryPolicy, *, has_fallback: bool = False,
           has_on_error: bool = False, fail_fast: bool = False, rng: random.Random | None = None) -> Decision:
    """Decide what to do about ``failure`` of a node running under ``policy`` (see the module
    docstring for the order).  ``rng`` draws a backoff's jitter (default: :mod:`random`)."""
    error = failure.error
    lost = failure.worker_losses
    final = (failure.fallback or error is None or (failure.crashed and not lost)
             or (policy.uses_dask_retries and not lost))
    if not final and policy.should_retry(error, failure.failed_attempts):  # type: ignore[arg-type]
        return Decision(DecisionKind.RETRY, after=policy.delay(error, failure.failed_attempts, rng),  # type: ignore[arg-type]
                        attempt=failure.failed_attempts + 1)
    notify = has_on_error and not failure.fallback
    if fail_fast:
        return Decision(DecisionKind.FAIL_RUN, notify=notify)
    if has_fallback and not failure.fallback and not isinstance(error, CodeError):
        return Decision(DecisionKind.FALLBACK, notify=notify)
    return Decision(DecisionKind.FAIL, notify=notify)


class NodeLike(Protocol):
    """What :func:`propagate` reads of a node: its parents' names and its trigger rule."""

    parents: Sequence[str]
    trigger: str


class OutcomeLike(Protocol):
    """What :func:`propagate` reads of a node's known outcome: its status, and why (skips)."""

    status: str
    reason: str | None


@dataclass(frozen=True)
class Propagation:
    """What a node's final failure means below it: ``skipped`` nodes (name -> ``(status,
    reason)``, in topological order: ``upstream_failed`` or ``skipped`` without running) and
    those to submit again (``rerun``, their trigger rule lets them run, or decides once their
    parents are known), in topological order."""

    skipped: dict[str, tuple[str, str]] = field(default_factory=dict)
    rerun: list[str] = field(default_factory=list)


def propagate(descendants: Iterable[str], nodes: Mapping[str, NodeLike],
              known: Mapping[str, OutcomeLike]) -> Propagation:
    """Apply the trigger rules below a finally failed node: ``descendants`` of it in topological
    order, ``known`` the outcomes known on the client (the failure included).  ``all_success``
    descendants below a failure or a skip do not run; every other unknown descendant (``all_done``,
    ``one_failed``, and what depends on them) is submitted again, a :class:`Failure` standing in
    for a failed parent."""
    out = Propagation()
    for n in descendants:
        if n in known or n in out.skipped:
            continue
        node = nodes[n]
        if node.trigger == ALL_SUCCESS:
            parents = []
            for p in node.parents:
                if p in out.skipped:
                    parents.append((p, *out.skipped[p]))
                elif p in known:
                    parents.append((p, known[p].status, known[p].reason))
            skip = skip_decision(ALL_SUCCESS, parents)
            if skip is not None:
                out.skipped[n] = skip
                continue
        out.rerun.append(n)
    return out
