"""An example agent workflow: fetch news, summarise, score; run on a LocalCluster started for you.

    pip install -e . && python examples/research_agent.py
"""
from __future__ import annotations

import networkx as nx

import cleo_dask as cd


@cd.task
def fetch(agent):
    """Pretend to fetch news about the agent's topic."""
    return [f"{agent.config['topic']} headline {i}" for i in range(3)]


@cd.task(retries=2, backoff=cd.fixed(0.2))
def summarize(agent, fetch):
    """Summarise the headlines."""
    return "; ".join(h.upper() for h in fetch)


@cd.task
def score(agent, fetch):
    """Score the news by volume."""
    return len(fetch)


@cd.task
def report(agent, summarize, score):
    """Combine everything into a report."""
    return f"[{agent.id}] {score} items: {summarize}"


def build() -> cd.Workflow:
    """The workflow, from a networkx graph."""
    g = nx.DiGraph([("fetch", "summarize"), ("fetch", "score"), ("summarize", "report"), ("score", "report")])
    return cd.Workflow.from_networkx(g, tasks={"fetch": fetch, "summarize": summarize, "score": score,
                                                "report": report}, name="research")


def main() -> int:
    """Run the workflow for three agents at once and print their reports."""
    wf = build()
    agents = [cd.Agent(f"researcher-{i}", config={"topic": t}) for i, t in enumerate(["dask", "llms", "graphs"])]
    with cd.Engine() as engine:
        print("dashboard:", engine.dashboard_link)
        runs = [engine.submit(wf, a) for a in agents]
        ok = True
        for run in runs:
            outcome = run.result()
            print(outcome["report"].value, "|", outcome.counts())
            ok = ok and outcome.ok
        single = engine.run(fetch, agents[0])
        print("immediate task:", single.status.value, single.value)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
