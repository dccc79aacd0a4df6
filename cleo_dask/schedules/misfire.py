"""The misfire policy and ``max_running``, as pure functions of the due times and the clock.

When the scheduler wakes up, a schedule may have several fire times in the past (the process was
down or too busy).  :func:`plan` decides, for each, whether it fires, was missed or is skipped:

* later than ``misfire_grace`` seconds: **missed** (recorded, never run);
* within the grace: runs, except that with ``coalesce=True`` only the latest of several runs and
  the earlier ones are recorded as missed ("coalesced");
* a run that would start while ``max_running`` runs of the schedule are still running is
  **skipped** (recorded with that reason).

Consecutive missed / coalesced firings are recorded as one decision with a ``count``, so a schedule
every second that was down for a day makes one history row, not 86,400.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from cleo_dask.schedules.records import FIRED, MISSED, SKIPPED, Decision


def plan(due: Sequence[float], now: float, *, grace: float | None, coalesce: bool, running: int = 0,
         max_running: int | None = None) -> list[Decision]:
    """Decide the fate of each due time (epoch seconds, ascending) at time ``now``.

    ``grace=None``: no limit.  ``running``: runs of this schedule still running now.
    """
    out: list[Decision] = []
    late = [t for t in due if grace is not None and now - t > grace]
    in_time = [t for t in due if not (grace is not None and now - t > grace)]
    if late:
        out.append(Decision(late[0], MISSED, f"{_n(len(late))}{now - late[0]:.3f} s late, beyond "
                            f"misfire_grace={grace:g} s", len(late), late[-1]))
    if coalesce and len(in_time) > 1:
        first, last = in_time[0], in_time[-2]
        out.append(Decision(first, MISSED, f"coalesced into the run due at {_iso(in_time[-1])}",
                            len(in_time) - 1, last))
        in_time = in_time[-1:]
    for t in in_time:
        reason = admit(running, max_running)
        if reason is None:
            out.append(Decision(t, FIRED))
            running += 1
        else:
            out.append(Decision(t, SKIPPED, reason))
    return out


def admit(running: int, max_running: int | None) -> str | None:
    """``None`` if a new run may start, else why not (``max_running`` runs still running)."""
    if max_running is not None and running >= max_running:
        return f"max_running={max_running}: {running} run(s) of this schedule still running"
    return None


def _n(count: int) -> str:
    return "" if count == 1 else f"{count} firings, the first "


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")
