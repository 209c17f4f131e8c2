"""Parts shared by hub, node and SDK: wire schemas, errors, filters, crypto (no DB, no web)."""
