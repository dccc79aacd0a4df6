"""Runs later: triggers, misfire, the schedule store and the loop that fires schedules.

``records`` (states, outcomes, frozen records) <- ``settings``, ``triggers``, ``misfire`` (pure
policy), ``prestage``, ``store`` (SQLite behind public methods), ``agents`` (an agent kept in a
store) <- ``build`` (a new schedule's record), ``changes`` (pause / resume / cancel) <- ``handle``
(:class:`Schedule`) <- ``loop`` (:class:`Scheduler`) <- ``engine_side`` (what the loop needs of an
engine); ``serve`` is ``cleo-dask serve``.
"""
