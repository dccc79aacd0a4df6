"""The failure decision without a cluster: one example per branch of ``decide``."""
from __future__ import annotations

import random

import cleo_dask as cd
from cleo_dask.errors import CodeError
from cleo_dask.failures.decide import Decision, DecisionKind, FailedAttempt, decide, propagate
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


# -- below a node that failed for good: the trigger rules ---------------------------------------

class Node:
    def __init__(self, *parents, trigger="all_success"):
        self.parents, self.trigger = parents, trigger


class Known:
    def __init__(self, status, reason=None):
        self.status, self.reason = status, reason


def test_all_success_children_below_a_failure_end_upstream_failed_naming_it():
    nodes = {"fetch": Node(), "parse": Node("fetch"), "store": Node("parse")}
    plan = propagate(["parse", "store"], nodes, {"fetch": Known("failed")})
    assert plan.skipped == {"parse": ("upstream_failed", "upstream 'fetch' failed"),
                            "store": ("upstream_failed", "upstream 'fetch' failed (via 'parse')")}
    assert plan.rerun == []


def test_all_done_and_one_failed_children_run_again_and_so_does_what_depends_on_them():
    nodes = {"fetch": Node(), "cleanup": Node("fetch", trigger="all_done"),
             "alert": Node("fetch", trigger="one_failed"), "report": Node("cleanup", "alert")}
    plan = propagate(["cleanup", "alert", "report"], nodes, {"fetch": Known("failed")})
    assert plan.skipped == {} and plan.rerun == ["cleanup", "alert", "report"]


def test_nodes_already_known_are_left_alone():
    nodes = {"fetch": Node(), "cached": Node("fetch"), "after": Node("cached")}
    plan = propagate(["cached", "after"], nodes, {"fetch": Known("failed"), "cached": Known("succeeded")})
    assert plan.skipped == {} and plan.rerun == ["after"]


def test_below_a_skipped_parent_an_all_success_child_is_skipped():
    nodes = {"check": Node(), "branch": Node("check"), "leaf": Node("branch")}
    plan = propagate(["leaf"], nodes, {"check": Known("failed"), "branch": Known("skipped", "condition false")})
    assert plan.skipped == {"leaf": ("skipped", "upstream 'branch' was skipped")}
