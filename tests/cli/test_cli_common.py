"""The ``cleo-dask`` command line's shared parts (``cleo_dask.cli.common``) and its layout: one
module per command, each adding its commands to the parser.  No cluster: these checks run in
milliseconds, before anything would be started or reached."""
from __future__ import annotations

import argparse
import importlib
import json
import sys

import pytest

from cleo_dask.cli import common
from cleo_dask.cli.common import BAD_INPUT, BadInput, engine_from_args, fail, security_from_args
from cleo_dask.cli.main import COMMAND_MODULES, build_parser
from cleo_dask.errors import CleoError


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_each_command_module_adds_its_own_commands_in_the_help_order():
    added = {}
    for name in COMMAND_MODULES:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(name).register(sub)
        added[name.rpartition(".")[2]] = list(sub.choices)
    assert added == {"run": ["run"], "validate": ["validate"], "cluster": ["cluster"], "runs": ["runs"],
                     "resume": ["resume"], "serve": ["serve"], "schedule": ["schedule"],
                     "signal": ["signal"], "consume": ["consume"]}
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == ["run", "validate", "cluster", "runs", "resume", "serve", "schedule", "signal", "consume"]


def test_fail_prints_one_line_and_gives_the_bad_input_code(capsys):
    assert fail("no such spec: x.yaml") == BAD_INPUT == 2
    assert capsys.readouterr().err == "cleo-dask: error: no such spec: x.yaml\n"


def test_bad_input_is_a_cleo_error():
    assert issubclass(BadInput, CleoError)


def test_the_commands_that_reach_a_cluster_share_the_connection_flags():
    for argv in (["run", "s.yaml"], ["resume", "r1", "--store", "runs.db"], ["serve", "--store", "cleo.db"]):
        args = parse(*argv, "--address", "tcp://h:1", "--connect-timeout", "3", "--tls-ca", "ca.pem")
        assert (args.address, args.connect_timeout, args.tls_ca) == ("tcp://h:1", 3.0, "ca.pem")


def test_tls_needs_all_three_files(tmp_path):
    (tmp_path / "ca.pem").write_text("")
    args = parse("cluster", "--tls-ca", str(tmp_path / "ca.pem"))
    with pytest.raises(BadInput, match="missing --tls-cert, --tls-key"):
        security_from_args(args)
    args = parse("cluster", "--tls-ca", str(tmp_path / "ca.pem"), "--tls-cert", "nope.pem", "--tls-key", "k.pem")
    with pytest.raises(BadInput, match="TLS file not found: --tls-cert nope.pem"):
        security_from_args(args)
    assert security_from_args(parse("cluster")) is None


@pytest.mark.parametrize("content, message", [
    (None, "scheduler file not found"),
    ("{}", "has no scheduler address"),
    ('{"address": ""}', "has no scheduler address"),
])
def test_a_scheduler_file_without_an_address_is_bad_input(tmp_path, content, message):
    path = tmp_path / "scheduler.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BadInput, match=message):
        engine_from_args(parse("run", "s.yaml", "--scheduler-file", str(path)))


def test_an_unsupported_address_scheme_is_bad_input():
    with pytest.raises(BadInput, match="unsupported scheduler address 'http://h:1'"):
        engine_from_args(parse("run", "s.yaml", "--address", "http://h:1"))


def test_inputs_from_args_override_the_spec_inputs(tmp_path):
    (tmp_path / "inputs.json").write_text(json.dumps({"ticker": "DASK", "limit": 3}))
    args = parse("run", "s.yaml", "--inputs-file", str(tmp_path / "inputs.json"), "--input", "limit=5")
    assert common.inputs_from_args(args, {"limit": 1, "depth": 2}) == {"limit": 5, "depth": 2, "ticker": "DASK"}
    with pytest.raises(BadInput):
        common.inputs_from_args(parse("run", "s.yaml", "--input", "no-equals-sign"))


def test_importable_cwd_adds_the_current_directory_and_a_spec_files_directory(tmp_path, monkeypatch):
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    (spec_dir / "wf.yaml").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    common.importable_cwd(str(spec_dir / "wf.yaml"))
    assert sys.path[0] == str(tmp_path)
    assert sys.path[-1] == str(spec_dir)   # last: it shadows no installed package
