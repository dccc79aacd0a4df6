"""Agents that decide at run time: child runs spawned from inside a task (:mod:`.spawn`)."""
