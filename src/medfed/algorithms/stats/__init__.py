"""medfed.algorithms.stats."""
