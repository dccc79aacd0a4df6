"""Named options owned by a policy: the option names, their check, and how a data file gives them.

A policy (retry, timeout, rate limit, ...) is a small object listing the option names it owns
(:attr:`OptionPolicy.names`).  It checks a finished object carrying those options
(:meth:`~OptionPolicy.check`), normalises values given by a user (:meth:`~OptionPolicy.convert`)
and reads them from a data file (:meth:`~OptionPolicy.read`), reporting each problem at its
location through a :class:`Field`.  A registry of policies (``cleo_dask.core.options``) is then the
one list of option names that every entry point reads (as dramatiq's middleware declare their
``actor_options``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from cleo_dask.errors import WorkflowError


class Field(Protocol):
    """A place in a data file (a mapping's key, with its line): where problems are reported."""

    def at(self, key: Any, container: Any = None) -> Field:
        """The place of ``container[key]`` below this one."""
        ...

    def problem(self, message: str) -> None:
        """Report a problem at this place (reading goes on: every problem is collected)."""
        ...

    def load(self, path: Any, check: Callable[[Any], str | None] | None = None) -> Any:
        """The object an import path ``"package.module:name"`` names, or ``None`` after reporting
        why not (``check(obj)``: a reason to refuse it, or ``None``)."""
        ...


class OptionPolicy:
    """Base of the policies: the option names a policy owns and what it does with them.

    ``names``: every option it owns, in the order they are listed to users; ``file_names``: those
    a data file (a spec file's node) may set (all of them unless a subclass says otherwise).
    """

    names: tuple[str, ...] = ()

    @property
    def file_names(self) -> tuple[str, ...]:
        """The options a data file may set."""
        return self.names

    def check(self, options: Any, what: str) -> None:
        """Raise :class:`~cleo_dask.errors.WorkflowError` if an option of ``options`` (an object
        with an attribute per option) is invalid; the message is prefixed with ``what:``."""

    def convert(self, options: dict[str, Any], of: str, as_task: Callable[[Any], Any]) -> None:
        """Normalise in place the values a user gave in ``options`` (for the task named ``of``;
        ``as_task`` turns a callable into a task, for options that hold tasks)."""

    def read(self, data: Mapping[str, Any], field: Field, out: dict[str, Any]) -> None:
        """Put in ``out`` the options ``data`` (a data file's mapping at ``field``) sets validly;
        report the invalid ones through ``field.at(name, data)``."""


def not_callable(obj: Any) -> str | None:
    """Why ``obj`` is not acceptable as a function (``None``: it is)."""
    return None if callable(obj) else f"is not callable ({type(obj).__name__})"


def not_exception_class(obj: Any) -> str | None:
    """Why ``obj`` is not acceptable as an exception class (``None``: it is)."""
    return None if isinstance(obj, type) and issubclass(obj, BaseException) else "is not an exception class"


def read_checked(data: Mapping[str, Any], name: str, check: Callable[[Any], Any], field: Field,
                 out: dict[str, Any]) -> None:
    """``out[name] = data[name]`` if ``check`` accepts it, else its message is a problem there."""
    try:
        check(data[name])
    except WorkflowError as exc:
        field.at(name, data).problem(str(exc))
    else:
        out[name] = data[name]
