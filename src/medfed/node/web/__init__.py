"""The node's steward web app (local only): see :mod:`medfed.node.web.app`."""
