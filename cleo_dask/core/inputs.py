"""Inputs (values of a workflow's parameters) as users give them outside Python.

* ``cleo-dask run|schedule add --input key=value``: the value is read as JSON (``3``, ``true``,
  ``[1, 2]``, ``{"a": 1}``, ``"quoted"``), and taken as a plain string when it is not JSON
  (``--input question=why is the sky blue``).
* ``--inputs-file FILE``: a JSON (``.json``) or YAML mapping of name to value.
* A spec's top-level ``inputs:`` mapping (defaults that the two above override).
* A schedule in a persistent store keeps its inputs as JSON text.

Every problem is a :class:`~cleo_dask.WorkflowError` (or the ``error`` class given) naming the
parameter or the file.  Which names are parameters is :mod:`cleo_dask.core.parameters`' business.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from cleo_dask.errors import ScheduleError, WorkflowError


def parse_input_args(items: Iterable[str] | None, error: type[Exception] = WorkflowError) -> dict[str, Any]:
    """``["key=value", ...]`` (``--input``, repeatable) as a dict; values JSON, else plain strings."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise error(f"--input {item!r}: expected NAME=VALUE (e.g. --input question='why?' or --input n=3)")
        if key in out:
            raise error(f"--input {key!r} is given twice")
        out[key] = _json_or_text(key, text, error)
    return out


class _NotFinite(Exception):
    pass


def _json_or_text(key: str, text: str, error: type[Exception]) -> Any:
    """``text`` read as strict JSON, else as plain text: ``NaN`` / ``Infinity`` are text (they are
    not JSON); a number too large for a float (``1e999``) is refused rather than becoming ``inf``."""
    def constant(name: str) -> Any:
        raise ValueError(name)

    def number(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise _NotFinite
        return value

    try:
        return json.loads(text, parse_constant=constant, parse_float=number)
    except ValueError:
        return text
    except _NotFinite:
        raise error(f"--input {key!r}: {text.strip()} is not a finite number (at most about 1.8e308)") from None


def read_inputs_file(path: str | os.PathLike[str] | None, error: type[Exception] = WorkflowError) -> dict[str, Any]:
    """The mapping in a JSON or YAML file (``--inputs-file``); ``{}`` for ``None``."""
    if path is None:
        return {}
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise error(f"inputs file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read inputs file {path}: {exc}") from None
    try:
        if path.endswith(".json"):
            data = json.loads(text)
        else:
            from cleo_dask.core.specread import safe_load
            data = safe_load(text)
    except Exception as exc:  # noqa: BLE001 - json.JSONDecodeError, yaml.YAMLError
        raise error(f"inputs file {path} is not valid {'JSON' if path.endswith('.json') else 'YAML'}: "
                    f"{str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    return input_mapping(data, f"inputs file {path}", error)


def input_mapping(data: Any, where: str, error: type[Exception] = WorkflowError) -> dict[str, Any]:
    """``data`` if it is a mapping of parameter names (non-empty strings) to values."""
    if not isinstance(data, Mapping):
        raise error(f"{where} must be a mapping of parameter name to value, got {type(data).__name__}")
    for key in data:
        if not isinstance(key, str) or not key:
            raise error(f"{where}: {key!r} is not a parameter name (a non-empty string)")
    return dict(data)


def check_schedule_inputs(wf: Any, inputs: Any) -> dict[str, Any]:
    """A schedule's inputs checked against the parameters of its workflow (:class:`ScheduleError`)."""
    try:
        return wf.check_inputs(inputs)
    except WorkflowError as exc:
        raise ScheduleError(f"schedule inputs: {exc}") from None


def dump_inputs(inputs: Mapping[str, Any] | None, persistent: bool) -> str | None:
    """Inputs as JSON text for a schedule store (``None`` if there are none).  A persistent store
    needs JSON values (another process reads them); an in-memory one keeps others in memory only."""
    if not inputs:
        return None
    try:
        return json.dumps(dict(inputs), allow_nan=False)
    except (TypeError, ValueError):
        if not persistent:
            return None
    for key, value in inputs.items():  # name the culprit
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ScheduleError(f"input {key!r} cannot be kept in a persistent schedule store: its value must "
                                f"be JSON (strings, numbers, booleans, null, lists, mappings): {exc}") from None
    raise ScheduleError("inputs cannot be kept in a persistent schedule store: they must be JSON")


def load_inputs(text: str | None) -> dict[str, Any]:
    """What :func:`dump_inputs` wrote."""
    return json.loads(text) if text else {}
