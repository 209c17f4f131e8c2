"""medfed.hub.api."""
