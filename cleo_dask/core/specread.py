"""Reading spec and agent files: YAML (safe, with line numbers) or JSON, into plain data.

Nothing a file holds can raise anything but a reported problem: YAML tags that do not fit
their value (``!!int three``, ``!!float ""``), tags naming Python objects, duplicate or
unhashable keys, documents nested too deeply, numbers with thousands of digits.  Each becomes
a problem naming the file (and the line, when YAML knows it); the caller reports them all.
"""
from __future__ import annotations

import json
import re
from typing import Any

import yaml

#: Returned by :func:`read` when the file could not be read (its problem is reported).
MISSING = object()
#: Deeper nesting than this is refused (a spec nests a few levels; Python's recursion, ~1000).
MAX_DEPTH = 100


class LineMap(dict):
    """A YAML mapping that remembers the line of each key (for error locations)."""

    line: int | None = None
    lines: dict[Any, int]


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when there: 10x faster
    """Safe YAML (no Python objects) that records lines, rejects duplicate keys and turns any
    failure of a tag's constructor into a ``ConstructorError`` at the value's line."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception as exc:  # noqa: BLE001 - ValueError, KeyError, ... of SafeConstructor's methods
            value = f" {node.value!r}" if isinstance(node, yaml.ScalarNode) else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.tag}{value} is not a valid value for that tag ({type(exc).__name__}: {exc})",
                node.start_mark) from None


def _construct_map(loader: _Loader, node: yaml.MappingNode):
    data = LineMap()
    data.line = node.start_mark.line + 1
    data.lines = {}
    yield data
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, f"unhashable key {key!r}", key_node.start_mark) from None
        if key in data:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        data[key] = loader.construct_object(value_node, deep=True)
        data.lines[key] = key_node.start_mark.line + 1


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)

#: Floats in exponent notation without a dot or an exponent sign (``1e3``, ``2E-1``, ``1.0e3``):
#: numbers in YAML 1.2 and JSON, strings for PyYAML's YAML 1.1 resolver (``timeout: 1e3`` would
#: be refused as "not a number").
_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _PlainLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as :class:`_Loader` does (for inputs files)."""


for _cls in (_Loader, _PlainLoader):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2's exponent floats (``1e3`` is a number, as in a spec file)."""
    return yaml.load(text, Loader=_PlainLoader)  # noqa: S506 - a SafeLoader subclass


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def read(path: str, problems: Any, what: str = "spec file") -> Any:
    """The data in ``path`` (JSON if it ends in ``.json``, else YAML), or :data:`MISSING` after
    reporting why with ``problems.add(None, message, file=..., line=...)``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        problems.add(None, f"no such {what}: {path}", file=path)
        return MISSING
    except (OSError, UnicodeDecodeError) as exc:
        problems.add(None, f"cannot read {what} {path}: {exc}", file=path)
        return MISSING
    line = None
    try:
        data = _parse(path, text)
    except RecursionError:
        problems.add(None, f"invalid {'JSON' if path.endswith('.json') else 'YAML'}: nested too deeply "
                           f"(more than {MAX_DEPTH} levels)", file=path)
        return MISSING
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        detail = " ".join(str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x) or str(exc)
        problems.add(None, f"invalid YAML: {detail}", file=path, line=line)
        return MISSING
    except ValueError as exc:  # JSON syntax, duplicate keys, integers of more than 4300 digits
        problems.add(None, f"invalid {'JSON' if path.endswith('.json') else 'YAML'}: {exc}", file=path)
        return MISSING
    if _too_deep(data):
        problems.add(None, f"nested too deeply (more than {MAX_DEPTH} levels)", file=path, line=line)
        return MISSING
    return data


def _parse(path: str, text: str) -> Any:
    if path.endswith(".json"):
        return json.loads(text, object_pairs_hook=_json_object)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, RecursionError):
        raise
    except Exception as exc:  # noqa: BLE001 - a constructor that failed outside construct_object
        raise ValueError(f"{type(exc).__name__}: {exc}") from None


def _too_deep(data: Any) -> bool:
    """Whether ``data`` nests lists / mappings more than :data:`MAX_DEPTH` deep (iteratively)."""
    stack = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple, set, dict)):
            if depth >= MAX_DEPTH:
                return True
            children = list(item.keys()) + list(item.values()) if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children)
    return False
