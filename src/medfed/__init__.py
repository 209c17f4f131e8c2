"""medfed: federated secondary use of medical data (hub, nodes, SDK, CLI)."""

from medfed._version import __version__
from medfed.sdk.client import Client

__all__ = ["Client", "__version__"]
