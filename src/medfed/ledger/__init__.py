"""medfed.ledger."""
