"""Clusters: the LocalCluster an Engine starts, connecting to one, and sending the user's code to it."""
