"""Task and node options: each policy owns its option names and its check once, and every entry
point (``@cd.task``, ``Workflow.add``, ``Task.options``, spec files) reads them from the registry."""
import contextvars
import dataclasses
import inspect

import pytest

import cleo_dask as cd
from cleo_dask.admission.concurrency import agent_id
from cleo_dask.core.options import FILE_OPTIONS, NODE_POLICIES, TASK_OPTIONS, TASK_POLICIES
from cleo_dask.core.spec import NODE_KEYS
from cleo_dask.core.task import TaskSpec, task
from cleo_dask.failures.timeout import set_deadline, time_left


def fetch(agent):
    return 1


def test_every_task_option_is_owned_by_exactly_one_policy():
    names = [name for policy in TASK_POLICIES + NODE_POLICIES for name in policy.names]
    assert len(names) == len(set(names))
    fields = [f.name for f in dataclasses.fields(TaskSpec)]
    assert tuple(fields[fields.index("is_async") + 1:]) == TASK_OPTIONS


def test_the_task_decorator_takes_exactly_the_registered_options():
    keywords = [p.name for p in inspect.signature(task).parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert tuple(keywords) == ("name",) + TASK_OPTIONS


def test_a_spec_node_takes_its_own_fields_then_the_options_files_may_set():
    assert NODE_KEYS == ("name", "task", "after", "when") + FILE_OPTIONS
    assert FILE_OPTIONS[0] == "trigger"
    assert "cache" not in FILE_OPTIONS  # a cache key function is code, not data


def test_an_unknown_option_lists_the_registered_ones():
    with pytest.raises(cd.WorkflowError, match=r"task 'fetch': unknown option\(s\) retires; known: retries, backoff"):
        cd.Workflow().add(fetch, retires=3)


@pytest.mark.parametrize("option, value, message", [
    ("retries", -1, "task 'fetch': retries must be an integer >= 0, got -1"),
    ("backoff", 3, "task 'fetch': backoff must be cd.fixed(...) or cd.exponential(...), got 3"),
    ("retry_on", "oops", "retry_on must be an exception class or a tuple of them"),
    ("timeout", 0, "task 'fetch': timeout must be > 0 seconds, got 0"),
    ("fallback", 3, "task 'fetch': fallback must be a task (a callable), got 3"),
    ("on_error", 3, "task 'fetch': on_error must be callable (agent, task name, error), got 3"),
    ("io_bound", "yes", "task 'fetch': io_bound must be True or False, got 'yes'"),
    ("cache", 3, "task 'fetch': cache must be True, False or a key function"),
    ("duration", -1, "task 'fetch': duration must be >= 0 seconds, got -1"),
])
def test_each_option_is_checked_the_same_way_by_task_workflow_add_and_options(option, value, message):
    for build in (lambda: cd.task(fetch, **{option: value}),
                  lambda: cd.Workflow().add(fetch, **{option: value}),
                  lambda: cd.task(fetch).options(**{option: value})):
        with pytest.raises(cd.WorkflowError) as info:
            build()
        assert str(info.value).startswith(message)


def test_a_bad_rate_limit_names_the_task():
    with pytest.raises(cd.WorkflowError, match="^task 'fetch': "):
        cd.task(fetch, rate_limit="often")


def test_agent_id_is_the_agents_id_or_its_text():
    class Named:
        id = 7

    assert agent_id(cd.Agent("researcher-1")) == "researcher-1"
    assert agent_id(Named()) == "7"
    assert agent_id("bob") == "bob"


def test_a_deadline_set_for_an_attempt_is_what_time_left_reads():
    def attempt():
        set_deadline(None)
        assert time_left() is None
        set_deadline(0.0)  # long past
        return time_left()

    assert contextvars.copy_context().run(attempt) == 0.0
