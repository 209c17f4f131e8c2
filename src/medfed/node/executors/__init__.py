"""medfed.node.executors."""
