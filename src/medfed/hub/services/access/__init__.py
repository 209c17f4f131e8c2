"""Access governance: REMS applications, entitlements, the DAC's due view, count discovery."""
