"""medfed: federated secondary use of medical data (hub, nodes, SDK, CLI).

``medfed.Client`` is the SDK's client, imported on first use (PEP 562), so a hub or node
process that imports ``medfed.<part>`` does not load the SDK and its HTTP stack.
"""

from typing import TYPE_CHECKING, Any

from medfed._version import __version__

if TYPE_CHECKING:
    from medfed.sdk.client import Client

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from medfed.sdk.client import Client

        return Client
    raise AttributeError(f"module 'medfed' has no attribute {name!r}")
