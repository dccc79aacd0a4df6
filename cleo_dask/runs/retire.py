"""Keys the slow path replaced are retired, not dropped, until the run has ended.

:class:`RunRetired` is a part of :class:`~cleo_dask.runs.run.Run` (a mixin over its fields).

A fallback, a trigger-rule rerun or a node decided on the client replaces Dask keys of the run
(the node's and its unfinished descendants').  The old keys must never run again.  Dropping
their futures one by one (when each is garbage collected) lets the scheduler hold an erred key
*no client wants* while an old dependent of it still exists; Dask then brings it back: a
``Client.retry`` of a parent sends its erred dependents back to ``waiting`` (old ones too), and
when such a waiting task is released the scheduler releases the unwanted erred dependency, which
sends its erred dependents back to ``waiting``, which recompute it: a task attempt of a node
after its fallback ran.  ``Client.cancel`` of a key whose dependent no client wants fails on the
scheduler (``assert ts.who_wants``) and takes the client's connection with it.

So a run keeps the futures of the keys it replaced (cancelling those still pending: their work
is not wanted) until it has ended, then cancels what a retry brought back meanwhile and lets
them all go at once.
"""
from __future__ import annotations

from collections.abc import Iterable

from distributed import Future

from cleo_dask.util.futures import release_futures


class RunRetired:
    """The retired-keys part of :class:`~cleo_dask.runs.run.Run` (see the module docstring)."""

    def _retire(self, futures: Iterable[Future | None]) -> None:
        """Keep ``futures`` (of keys replaced or no longer looked at) wanted until the run ends;
        cancel those still pending."""
        futures = [f for f in futures if f is not None]
        self._retired.extend(futures)
        pending = [f for f in futures if f.status == "pending"]
        if pending:
            self._client.cancel(pending)

    def _drop_retired(self) -> None:
        """The run has ended: cancel the retired keys a retry brought back, let all of them go."""
        retired, self._retired = self._retired, []
        if not retired:
            return
        pending = [f for f in retired if f.status == "pending"]
        if pending:
            self._client.cancel(pending)
        release_futures(self._client, retired)
