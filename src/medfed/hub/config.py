"""Hub settings, read from ``MEDFED_*`` environment variables (pydantic-settings).

The hub refuses to start outside dev mode with the default secret key. The database is a
SQLite file under ``data_dir`` unless ``MEDFED_DATABASE_URL`` names another (for example
``postgresql+psycopg://user@host/db``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "change-me-dev-only"
#: key of the app's settings in ``Session.info`` (sessions made by ``create_app``)
SETTINGS_INFO = "medfed.hub_settings"


class HubSettings(BaseSettings):
    """Everything the hub process needs; one instance per :func:`create_app`."""

    model_config = SettingsConfigDict(env_prefix="MEDFED_", extra="ignore")

    data_dir: Path = Path("var/hub")
    database_url: str | None = None
    secret_key: str = DEFAULT_SECRET
    dev_mode: bool = False
    min_nodes: int = Field(
        default=2,
        ge=1,
        description="minimum nodes that must contribute to a result (default 2: no single-node "
        "releases; nodes refuse single-node tasks too unless their policy has sole_release)",
    )
    lease_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    long_poll_seconds: float = Field(default=25.0, gt=0, le=120)
    recheck_seconds: float = Field(
        default=0.5, gt=0, description="how often a waiting long poll re-reads the database"
    )
    sweep_seconds: float = Field(default=1.0, gt=0)
    checkpoint_seconds: float = Field(default=2.0, gt=0, description="ledger checkpoint period")
    token_days: int = Field(default=30, ge=1)
    max_blob_bytes: int = Field(
        default=2 * 1024**3, ge=1, description="largest weights/update upload (bytes)"
    )
    discovery_budget: int = Field(
        default=50, ge=0, description="count-discovery queries per user per discovery window"
    )
    discovery_window_hours: float = Field(default=24.0, gt=0)
    discovery_org_budget: int = Field(
        default=500,
        ge=0,
        description="count-discovery queries per organization (all its users together) per "
        "discovery window",
    )
    project_query_budget: int = Field(
        default=200,
        ge=0,
        description="statistical tasks per project per query window, where the DAC set none",
    )
    project_query_window_hours: float = Field(
        default=24.0, gt=0, description="the window of project_query_budget (hours)"
    )

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> HubSettings:
        if not self.dev_mode and self.secret_key == DEFAULT_SECRET:
            raise ValueError("MEDFED_SECRET_KEY is the default; set a secret or MEDFED_DEV_MODE=1")
        return self

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'hub.db').resolve()}"
