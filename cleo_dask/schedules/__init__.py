"""Runs later: triggers, misfire, the schedule store and the loop that fires schedules."""
