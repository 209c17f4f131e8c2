"""Encrypted export packages for approved data transfers: :mod:`.package` builds and opens
them, :mod:`.crypto` holds the keys and ciphers (``medfed node export build|open|keygen``).
See ``docs/deidentification.md``."""
