"""The failure decision without a cluster: one example per branch of ``decide``."""
from __future__ import annotations

import random

import cleo_dask as cd
from cleo_dask.errors import CodeError
from cleo_dask.failures.decide import Decision, DecisionKind, FailedAttempt, decide
from cleo_dask.failures.retry import RetryPolicy

THREE_RETRIES = RetryPolicy(retries=3, backoff=cd.fixed(2.0))


def test_a_retryable_error_is_retried_after_the_backoff():
    decision = decide(FailedAttempt(ConnectionError("flaky"), failed_attempts=1), THREE_RETRIES)
    assert decision == Decision(DecisionKind.RETRY, after=2.0, attempt=2)


def test_retries_stop_when_spent_and_the_node_fails():
    decision = decide(FailedAttempt(ConnectionError("flaky"), failed_attempts=4), THREE_RETRIES)
    assert decision == Decision(DecisionKind.FAIL)


def test_an_error_outside_retry_on_is_not_retried():
    policy = RetryPolicy(retries=3, backoff=cd.fixed(1.0), retry_on=(ConnectionError,))
    assert decide(FailedAttempt(ValueError("bad input")), policy).kind is DecisionKind.FAIL


def test_retry_raised_by_the_task_retries_any_error_with_its_own_delay():
    policy = RetryPolicy(retries=1, backoff=cd.fixed(9.0), retry_on=(ConnectionError,))
    decision = decide(FailedAttempt(cd.Retry("later", delay=0.5)), policy)
    assert decision == Decision(DecisionKind.RETRY, after=0.5, attempt=2)


def test_the_backoff_jitter_comes_from_the_rng_given():
    policy = RetryPolicy(retries=2, backoff=cd.exponential(first=1.0, jitter=0.5))
    one = decide(FailedAttempt(OSError()), policy, rng=random.Random(7))
    two = decide(FailedAttempt(OSError()), policy, rng=random.Random(7))
    assert one == two and one.kind is DecisionKind.RETRY and 0.5 <= one.after <= 1.5


def test_dask_retries_already_spent_make_the_failure_final():
    policy = RetryPolicy(retries=2)  # no backoff, any exception: Dask's own retries= did them
    assert policy.uses_dask_retries
    assert decide(FailedAttempt(OSError(), failed_attempts=1), policy).kind is DecisionKind.FAIL


def test_a_lost_worker_is_retried_as_the_policy_says_even_with_dask_retries():
    killed = FailedAttempt(RuntimeError("KilledWorker"), failed_attempts=1, crashed=True, worker_losses=3)
    assert decide(killed, RetryPolicy(retries=2)) == Decision(DecisionKind.RETRY, after=0.0, attempt=2)


def test_a_task_that_could_not_run_at_all_is_not_retried():
    unpicklable = FailedAttempt(TypeError("cannot unpickle"), crashed=True)
    assert decide(unpicklable, THREE_RETRIES).kind is DecisionKind.FAIL


def test_an_attempt_without_an_error_is_final():
    assert decide(FailedAttempt(None), THREE_RETRIES).kind is DecisionKind.FAIL


def test_on_error_is_notified_once_the_node_has_failed_for_good():
    spent = FailedAttempt(OSError(), failed_attempts=4)
    assert decide(spent, THREE_RETRIES, has_on_error=True) == Decision(DecisionKind.FAIL, notify=True)
    retrying = decide(FailedAttempt(OSError()), THREE_RETRIES, has_on_error=True)
    assert retrying.kind is DecisionKind.RETRY and not retrying.notify


def test_fail_fast_fails_the_run_even_with_a_fallback():
    decision = decide(FailedAttempt(OSError()), RetryPolicy(), has_fallback=True, has_on_error=True, fail_fast=True)
    assert decision == Decision(DecisionKind.FAIL_RUN, notify=True)


def test_a_node_with_a_fallback_falls_back_once_retries_are_spent():
    assert decide(FailedAttempt(OSError()), RetryPolicy(), has_fallback=True) == Decision(DecisionKind.FALLBACK)


def test_a_failed_fallback_fails_the_node_without_notifying_again():
    failed_fallback = FailedAttempt(OSError(), fallback=True)
    decision = decide(failed_fallback, THREE_RETRIES, has_fallback=True, has_on_error=True)
    assert decision == Decision(DecisionKind.FAIL, notify=False)


def test_code_the_cluster_cannot_load_gets_no_fallback():
    cannot_load = FailedAttempt(CodeError("module 'mytasks' not found on the workers"), crashed=True)
    assert decide(cannot_load, RetryPolicy(), has_fallback=True).kind is DecisionKind.FAIL
