"""What a run needs from the engine that submitted it, and nothing more: a :class:`RunContext`.

The engine builds one context and hands it to each of its runs, so that a :class:`Run` never
holds (or imports) the engine: it sends its events, schedules its slow path on the driver and
announces its end through these few parts.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cleo_dask.runs.driver import Driver
    from cleo_dask.runs.eventsend import EventSender


class RunJournal(Protocol):
    """What a run asks of its engine's journal (``Engine(store=...)``)."""

    def problem(self, run: Any, timeout: float = 30) -> str | None:
        """Why ``run`` is not (completely) in the journal, or ``None`` if it is."""


@dataclass(frozen=True)
class RunContext:
    """The parts of an engine its runs use.

    ``client``: the Dask client; ``driver``: the thread running the client-side slow path;
    ``events``: the ordered sender of the runs' events; ``on_finished(run)``: called once when a
    run has ended; ``dashboard_link()``: the Dask dashboard's address (or ``None``);
    ``journal()``: the engine's journal, or ``None`` when it keeps none (read when needed: a
    journal may be attached after the engine starts).
    """

    client: Any
    driver: Driver
    events: EventSender
    on_finished: Callable[[Any], None]
    dashboard_link: Callable[[], str | None]
    journal: Callable[[], RunJournal | None]
