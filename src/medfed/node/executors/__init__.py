"""Executors of work that runs apart from the node agent (training plans)."""
