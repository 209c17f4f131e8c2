"""The public surface is small and pinned: what ``import medfed`` offers."""

from __future__ import annotations

import medfed


def test_the_package_exports_exactly_the_client_and_the_version() -> None:
    assert sorted(medfed.__all__) == ["Client", "__version__"]
    assert medfed.Client.__module__ == "medfed.sdk.client"
    assert medfed.__version__ == "0.1.0"
