"""Hub services: all logic lives here, called with a session and keyword-only arguments.

Routes, the CLI and tests call these functions; each commits nothing itself — the caller
owns the transaction (routes commit once per request), so a failed check stores nothing.
"""
