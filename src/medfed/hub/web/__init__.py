"""medfed.hub.web."""
