"""Catalogue tables of the hub (dataset lifecycle, versions, persistent ids, publishing).

Imported at the end of ``medfed.hub.db.models`` so that ``Base.metadata`` holds every table.
The lifecycle columns live on ``Dataset`` itself (one row per immutable version); here are
each organization's Zenodo settings (its token is never returned by the API) and the
Zenodo depositions made for dataset versions, kept also when a deposition failed half-way
so that an operator can see (and retry) it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from medfed.common.timeutil import utcnow
from medfed.hub.db.models import Base

__all__ = ["Base", "CatalogueSettings", "ZenodoDeposition"]


class CatalogueSettings(Base):
    """Per-organization publishing settings: the Zenodo endpoint and token."""

    __tablename__ = "catalogue_settings"

    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id"), primary_key=True, autoincrement=False
    )
    zenodo_url: Mapped[str] = mapped_column(String(300), default="https://zenodo.org")
    zenodo_token: Mapped[str | None] = mapped_column(Text)  # sealed (medfed.hub.keys)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ZenodoDeposition(Base):
    """One Zenodo deposition of a dataset version's metadata (never its data).

    ``status``: ``published`` (the DOI is the version's pid), ``deleted`` (publishing failed
    half-way and the unpublished draft was deleted at Zenodo), ``orphaned`` (publishing
    failed and deleting the draft failed too: the id is kept for a retry), ``withdrawn``
    (the dataset was invalidated and the record's metadata now says so), ``withdraw_failed``.
    """

    __tablename__ = "zenodo_depositions"

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    deposition_id: Mapped[int | None] = mapped_column(Integer)
    doi: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
