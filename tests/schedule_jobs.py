"""Importable targets for the schedule tests (a serve subprocess imports them by path)."""
import time

import cleo_dask as cd


@cd.task
def append_line(agent):
    """Append the time to the file named in the agent's config: one line per run."""
    with open(agent.config["path"], "a") as f:
        f.write(f"{time.time()}\n")
    return agent.config["path"]


@cd.task
def nap(agent):
    """Sleep a little (to keep a run running for max_running)."""
    time.sleep(agent.config.get("seconds", 1.0))


@cd.task
def append_word(agent, word, times=1):
    """Append ``word`` (a workflow parameter: the schedule's input) ``times`` times to the agent's file."""
    with open(agent.config["path"], "a") as f:
        f.write(f"{word}\n" * times)
    return word


nightly = cd.Workflow("nightly")
nightly.add(append_line)
