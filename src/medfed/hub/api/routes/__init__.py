"""medfed.hub.api.routes."""
