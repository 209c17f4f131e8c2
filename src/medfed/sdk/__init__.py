"""medfed.sdk."""
