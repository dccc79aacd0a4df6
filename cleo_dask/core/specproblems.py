"""Problems found in a spec or agent file, each with its location (file, line, node, field).

Reading a file never stops at the first problem: every one is collected in :class:`Problems`
and reported at once, in one :class:`WorkflowError` whose ``problems`` attribute lists them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cleo_dask.core.specread import LineMap
from cleo_dask.core.task import TaskSpec
from cleo_dask.errors import WorkflowError
from cleo_dask.util.imports import resolve


@dataclass(frozen=True)
class Where:
    """A place in a file: the keys leading to it and its line (when YAML knows it)."""

    file: str
    path: tuple[str, ...]
    line: int | None = None

    def at(self, key: Any, container: Any = None) -> Where:
        """The place of ``container[key]`` (its own line if ``container`` remembers it)."""
        line = container.lines.get(key, self.line) if isinstance(container, LineMap) else self.line
        return Where(self.file, self.path + (str(key),), line)


class Problems:
    """Every problem found in the file ``source``, and the task specs built while reading it."""

    def __init__(self, source: str):
        self.source = source
        self.items: list[str] = []
        self.specs: dict[int, tuple[Any, TaskSpec]] = {}  # one TaskSpec per task object, for big specs

    def add(self, where: Where | None, message: str, *, file: str | None = None, line: int | None = None) -> None:
        """Record ``message`` at ``where`` (or in ``file`` at ``line``; default: the source)."""
        if where is not None:
            file, line = where.file, where.line if line is None else line
        loc = file or self.source
        if line is not None:
            loc += f":{line}"
        if where is not None and where.path:
            loc += f": {describe(where.path)}"
        self.items.append(f"{loc}: {message}")

    def raise_if_any(self) -> None:
        """Raise one :class:`WorkflowError` listing every problem (its ``problems`` attribute)."""
        if not self.items:
            return
        n = len(self.items)
        err = WorkflowError(f"{n} problem{'s' if n > 1 else ''} in {self.source}:\n"
                            + "\n".join(f"  - {p}" for p in self.items))
        err.problems = list(self.items)  # type: ignore[attr-defined]
        raise err


@dataclass(frozen=True)
class SpecField:
    """A place in a file where a policy reads an option (see :class:`cleo_dask.util.options.Field`)."""

    where: Where
    problems: Problems

    def at(self, key: Any, container: Any = None) -> SpecField:
        """The place of ``container[key]`` below this one."""
        return SpecField(self.where.at(key, container), self.problems)

    def problem(self, message: str) -> None:
        """Report ``message`` here."""
        self.problems.add(self.where, message)

    def load(self, path: Any, check: Callable[[Any], str | None] | None = None) -> Any:
        """The object import path ``path`` names, or ``None`` after reporting why not."""
        return import_path(path, self.where, self.problems, check)


def describe(path: tuple[str, ...]) -> str:
    """``('nodes', 'fetch', 'retries')`` -> ``node 'fetch', field 'retries'``."""
    if len(path) >= 2 and path[0] == "nodes":
        out = f"node {path[1]!r}"
        if len(path) > 2:
            out += f", field {'.'.join(path[2:])!r}"
        return out
    return f"field {'.'.join(path)!r}"


def line_of(data: Any) -> int | None:
    """The line where ``data`` starts, if the YAML reader recorded it."""
    return data.line if isinstance(data, LineMap) else None


def unknown_keys(data: dict[str, Any], known: tuple[str, ...], where: Where, problems: Problems) -> None:
    """A problem for each key of ``data`` not in ``known``."""
    for key in data:
        if key not in known:
            problems.add(where.at(key, data), f"unknown key {key!r}; expected one of {', '.join(known)}")


def import_path(path: Any, where: Where, problems: Problems, check: Callable[[Any], str | None] | None = None) -> Any:
    """The object at import path ``path``, or ``None`` after reporting why not at ``where``
    (``check(obj)``: a reason to refuse the object, or ``None``)."""
    if not isinstance(path, str):
        problems.add(where, f"must be an import path 'package.module:name' (a string), got {path!r}")
        return None
    try:
        obj = resolve(path)
    except WorkflowError as exc:
        problems.add(where, str(exc))
        return None
    except Exception as exc:  # noqa: BLE001 - a module that fails while importing
        problems.add(where, f"import path {path!r}: importing it raised {type(exc).__name__}: {exc}")
        return None
    message = check(obj) if check else None
    if message:
        problems.add(where, f"import path {path!r} {message}")
        return None
    return obj
