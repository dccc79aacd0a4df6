"""What a workflow is and how it runs on the workers: tasks, agents, the DAG, the compiled graph, outcomes."""
