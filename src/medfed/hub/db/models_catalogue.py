"""Catalogue tables of the hub (dataset lifecycle, versions, persistent ids, publishing).

Imported at the end of ``medfed.hub.db.models`` so that ``Base.metadata`` holds every table.
"""

from __future__ import annotations

from medfed.hub.db.models import Base

__all__ = ["Base"]
