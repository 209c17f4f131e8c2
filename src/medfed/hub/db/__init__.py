"""medfed.hub.db."""
