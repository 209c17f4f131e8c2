"""medfed.hub."""
