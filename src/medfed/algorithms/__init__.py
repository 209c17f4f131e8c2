"""medfed.algorithms."""
