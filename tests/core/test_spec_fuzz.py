"""Fuzzing spec loading: whatever a YAML or JSON file holds, ``load_spec`` (and ``load_agent``)
either load it or raise a :class:`cleo_dask.CleoError` listing its problems, never another
exception (issue 15: YAML tags such as ``!!int three`` and deep nesting used to escape raw).

Documents are built around the valid keys of a spec, with random values of every YAML and
JSON kind: numbers out of range, ``.inf`` / ``NaN``, huge integers, tags fitting or not their
value, anchors and aliases, nested sequences and mappings, import paths good and bad.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cleo_dask as cd
from _dask_procs import SPECS
from cleo_dask.core.spec import AGENT_KEYS, EXPONENTIAL_KEYS, NODE_KEYS, TOP_KEYS, load_agent, load_spec

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))

#: Import paths that exist, do not, or name the wrong kind of object (none with import side effects).
PATHS = ["pipeline_tasks:fetch", "pipeline_tasks:summarize", "pipeline_tasks:boom", "pipeline_tasks:rescue",
         "pipeline_tasks:has_items", "pipeline_tasks:combine", "pipeline_tasks:workflow", "pipeline_tasks:nope",
         "builtins:ConnectionError", "builtins:TimeoutError", "builtins:len", "builtins:int", "os:path",
         "no_such_module_for_fuzzing:task", "pipeline_tasks", ":", "pipeline_tasks:", ":fetch"]
KEYS = list(dict.fromkeys(TOP_KEYS + NODE_KEYS + AGENT_KEYS + EXPONENTIAL_KEYS + ("fixed", "exponential")))
TAGS = ["!!int", "!!float", "!!str", "!!bool", "!!null", "!!binary", "!!timestamp", "!!seq", "!!map", "!!set",
        "!!omap", "!!pairs", "!!merge", "!!value", "!custom", "!!python/object:os.system",
        "!!python/name:os.system", "!<tag:yaml.org,2002:int>"]
ODD_SCALARS = [".inf", "-.inf", ".nan", ".NaN", "1e400", "1.0e+400", "-1.0e+400", "1.0e+300", "0", "-1", "0.0",
               "null", "~", "true", "false", "yes", "no", "on", "''", '""', "0x1F", "0o17", "0b101", "1_000",
               "190:20:30", "2001-12-14", "2001-13-45", "2001-12-14t21:59:43.10-05:00", "1" + "0" * 5000,
               "9" * 400, "-" + "9" * 400, "=", "<<", "*undefined", "? ", "- ", "[", "{", "]", "}", "&", "!"]


@pytest.fixture(scope="module", autouse=True)
def tasks_importable():
    sys.path.insert(0, str(SPECS))
    yield
    sys.path.remove(str(SPECS))


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as d:
        yield d


def load_both(folder: str, name: str, text: str) -> None:
    """Load ``text`` as a spec and as an agent file: a CleoError or nothing, never another error."""
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    for load in (load_spec, load_agent):
        try:
            load(path)
        except cd.CleoError:
            pass


# -- YAML, written as text (so that tags, anchors and odd scalars appear) ------------------------
quoted = st.text(max_size=12).map(json.dumps)      # a double-quoted YAML scalar
plain = st.text(alphabet="abcxyz_-. 019", max_size=8)  # unquoted: no ':' (no import path of chance)
yaml_scalars = st.one_of(
    st.integers(min_value=-10**12, max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(ODD_SCALARS), st.sampled_from(PATHS), quoted, plain,
)


def yaml_containers(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    keys = st.one_of(st.sampled_from(KEYS), yaml_scalars)
    return st.one_of(
        st.lists(children, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(keys, children), max_size=4).map(
            lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"),
        st.tuples(st.sampled_from(TAGS), children).map(" ".join),          # a tag on anything
        st.tuples(st.sampled_from(["&a", "&b"]), children).map(" ".join),  # an anchor
        st.sampled_from(["*a", "*b"]),                                     # an alias (maybe undefined)
    )


yaml_values = st.recursive(yaml_scalars, yaml_containers, max_leaves=8)


def yaml_mapping(fields: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[str]:
    """A flow mapping with some of ``fields`` (each with its own value strategy), maybe extra keys."""
    pairs = [st.one_of(st.none(), st.tuples(st.just(k), v)) for k, v in fields.items()]
    extra = st.lists(st.tuples(yaml_scalars, yaml_values), max_size=1)
    return st.tuples(st.tuples(*pairs), extra, st.randoms(use_true_random=False)).map(
        lambda t: "{" + ", ".join(f"{k}: {v}" for k, v in _shuffled([p for p in t[0] if p] + t[1], t[2])) + "}")


def _shuffled(items: list, rng) -> list:
    rng.shuffle(items)
    return items


numbers = st.one_of(st.sampled_from(ODD_SCALARS[:20]), st.integers(-3, 5).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr), yaml_values)
backoffs = st.one_of(
    numbers,
    numbers.map(lambda v: f"{{fixed: {v}}}"),
    yaml_mapping({k: numbers for k in EXPONENTIAL_KEYS}).map(lambda m: f"{{exponential: {m}}}"),
    yaml_values,
)
node_fields = {
    "name": st.one_of(st.sampled_from(["a", "b", "c"]), yaml_values),
    "task": st.one_of(st.sampled_from(PATHS), yaml_values),
    "after": st.one_of(st.sampled_from(["a", "b", "[a, b]", "[]", "c"]), yaml_values),
    "when": st.one_of(st.sampled_from(PATHS), yaml_values),
    "trigger": st.one_of(st.sampled_from(["all_success", "all_done", "one_failed", "sometimes"]), yaml_values),
    "retries": numbers, "backoff": backoffs, "timeout": numbers, "duration": numbers,
    "retry_on": st.one_of(st.sampled_from(PATHS), st.lists(st.sampled_from(PATHS), max_size=3).map(
        lambda xs: "[" + ", ".join(xs) + "]"), yaml_values),
    "fallback": st.one_of(st.sampled_from(PATHS), yaml_values),
    "on_error": st.one_of(st.sampled_from(PATHS), yaml_values),
    "io_bound": st.one_of(st.sampled_from(["true", "false"]), yaml_values),
    "rate_limit": st.one_of(st.sampled_from(["'10/m'", "'1e400/s'", "'0/s'", "5", ".inf", "'1/99999999999999999999d'"]),
                            yaml_values),
}
agents = st.one_of(yaml_values, yaml_mapping({"id": yaml_values, "config": yaml_values, "max_concurrency": numbers}))
nodes = st.one_of(st.lists(yaml_mapping(node_fields), max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
                  yaml_values)
yaml_specs = yaml_mapping({"name": yaml_values, "agent": agents, "nodes": nodes, "priority": numbers,
                           "fail_fast": st.one_of(st.sampled_from(["true", "false", "'no'"]), yaml_values)})


@pytest.mark.slow
@FUZZ
@given(text=st.one_of(yaml_specs, yaml_values, st.text(max_size=60)))
def test_any_yaml_document_loads_or_is_a_cleo_error(folder, text):
    load_both(folder, "fuzz.yaml", text)


# -- JSON, built as data (NaN, Infinity and huge integers included) ------------------------------
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**400),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
                         st.sampled_from(PATHS))
json_values = st.recursive(json_scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)),
                                                    children, max_size=4)), max_leaves=8)
json_nodes = st.lists(st.fixed_dictionaries({}, optional={
    "name": st.one_of(st.sampled_from(["a", "b"]), json_values), "task": st.one_of(st.sampled_from(PATHS), json_values),
    "after": json_values, "retries": json_values, "timeout": json_values, "duration": json_values,
    "backoff": st.one_of(json_values, st.fixed_dictionaries({"fixed": json_values}),
                         st.fixed_dictionaries({"exponential": st.fixed_dictionaries(
                             {}, optional={k: json_values for k in EXPONENTIAL_KEYS})})),
    "rate_limit": json_values, "io_bound": json_values, "trigger": json_values,
}), max_size=3)
json_specs = st.fixed_dictionaries({"nodes": st.one_of(json_nodes, json_values)}, optional={
    "name": json_values, "priority": json_values, "fail_fast": json_values,
    "agent": st.one_of(json_values, st.fixed_dictionaries({"id": json_values}, optional={
        "config": json_values, "max_concurrency": json_values})),
})


@pytest.mark.slow
@FUZZ
@given(data=st.one_of(json_specs, json_values), depth=st.sampled_from([0, 0, 0, 200, 5000]))
def test_any_json_document_loads_or_is_a_cleo_error(folder, data, depth):
    text = json.dumps(data, allow_nan=True)
    if depth:
        text = "[" * depth + text + "]" * depth
    load_both(folder, "fuzz.json", text)
