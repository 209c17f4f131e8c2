"""Hub settings, read from ``MEDFED_*`` environment variables (pydantic-settings).

Outside dev mode the hub refuses to start without ``MEDFED_SECRET_KEY`` or with one shorter
than 32 bytes; in dev mode without one it uses a random key generated once per data folder
(``medfed.hub.keys.dev_secret``), never a public default. The database is a SQLite file
under ``data_dir`` unless ``MEDFED_DATABASE_URL`` names another (for example
``postgresql+psycopg://user@host/db``). Blobs (weights, models, binary outputs) live in that
PostgreSQL database, or under ``data_dir/blobs`` on SQLite (``blob_store``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Engine

from medfed.hub.keys import DEV_KEY_FILE, MIN_SECRET_BYTES, dev_secret
from medfed.hub.services.oidc_config import OidcProvider

log = logging.getLogger(__name__)

ZENODO_URLS = ("https://zenodo.org", "https://sandbox.zenodo.org")
#: roles that need a second factor unless ``mfa_required_roles`` says otherwise
DEFAULT_MFA_ROLES = ("admin", "steward", "dac")
#: key of the app's settings in ``Session.info`` (sessions made by ``create_app``)
SETTINGS_INFO = "medfed.hub_settings"


class HubSettings(BaseSettings):
    """Everything the hub process needs; one instance per :func:`create_app`."""

    model_config = SettingsConfigDict(env_prefix="MEDFED_", extra="ignore")

    data_dir: Path = Path("var/hub")
    database_url: str | None = None
    secret_key: str = Field(
        default="",
        repr=False,
        description="at least 32 bytes outside dev mode (signs checkpoints and entitlements, "
        "seals stored tokens); unset in dev mode: a random key kept in the data folder",
    )
    dev_mode: bool = False
    min_nodes: int = Field(
        default=2,
        ge=1,
        description="minimum nodes that must contribute to a result (default 2: no single-node "
        "releases; nodes refuse single-node tasks too unless their policy has sole_release)",
    )
    lease_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    run_deadline_seconds: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="a run not answered this long after it was created (its node offline, "
        "or never claiming it) is failed by the sweeper, and its task ends; per algorithm "
        "in run_deadlines",
    )
    run_deadlines: dict[str, float] = Field(
        default_factory=lambda: {"script.run": 14 * 86400.0, "fl.train": 7 * 86400.0},
        description="run deadline in seconds per algorithm name (JSON in the environment, "
        "e.g. MEDFED_RUN_DEADLINES='{\"glm\": 600}'); a steward's airlock decision and a "
        "training round may take days",
    )
    long_poll_seconds: float = Field(default=25.0, gt=0, le=120)
    recheck_seconds: float = Field(
        default=0.5, gt=0, description="how often a waiting long poll re-reads the database"
    )
    principal_cache_seconds: float = Field(
        default=30.0,
        ge=0,
        le=300,
        description="how long a verified bearer's principal is kept in memory at most "
        "(changes through any hub on the database end it at once; 0: off)",
    )
    sweep_seconds: float = Field(default=1.0, gt=0)
    checkpoint_seconds: float = Field(default=2.0, gt=0, description="ledger checkpoint period")
    token_days: int = Field(default=30, ge=1)
    max_blob_bytes: int = Field(
        default=2 * 1024**3, ge=1, description="largest weights/update upload (bytes)"
    )
    sqlite_busy_seconds: float = Field(
        default=10.0,
        gt=0,
        description="how long a SQLite write waits for the lock before the request gets 503",
    )
    max_json_bytes: int = Field(
        default=1024**2, ge=1024, description="largest JSON or form body of a user request"
    )
    max_anonymous_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="largest body of a request without credentials (login, public forms)",
    )
    max_node_json_bytes: int = Field(
        default=16 * 1024**2, ge=1024, description="largest JSON body a node sends (results)"
    )
    max_upload_bytes: int = Field(
        default=21 * 1024**2,
        ge=1024,
        description="largest multipart upload (ethics files: 20 MiB plus the form)",
    )
    max_model_bytes: int = Field(
        default=512 * 1024**2, ge=1, description="largest ONNX model a validation study takes"
    )
    blob_store: Literal["database", "files"] | None = Field(
        default=None,
        description="where blobs live: 'database' (chunks in PostgreSQL; the default there, "
        "so hub processes share them) or 'files' (under data_dir/blobs; the default on SQLite)",
    )
    blob_quota_bytes: int = Field(
        default=10 * 1024**3,
        ge=0,
        description="total bytes of weights one user may upload to PUT /api/blobs",
    )
    login_max_failures: int = Field(
        default=5, ge=1, description="failed logins per account or address before a lock-out"
    )
    login_window_seconds: float = Field(
        default=900.0, gt=0, description="window of login_max_failures and the lock-out length"
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

    zenodo_urls: list[str] = Field(
        default_factory=lambda: list(ZENODO_URLS),
        description="Zenodo endpoints an organization may configure (the hub sends its token "
        "there); anything else is refused",
    )

    # ------------------------------------------------- OpenID Connect (issue 15, login)
    oidc_providers: list[OidcProvider] = Field(
        default_factory=list,
        description="OpenID providers users may sign in with (JSON list in the environment; "
        "see docs/identity.md and medfed.hub.services.oidc_config.OidcProvider)",
    )
    oidc_reauth_hours: float = Field(
        default=24.0,
        gt=0,
        le=24,
        description="API tokens of a user who signs in through a provider work only this long "
        "after the user's last login there (then: log in again, which re-reads the roles)",
    )

    # ---------------------------------------------------------------- identity (issue 15)
    mfa_required_roles: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MFA_ROLES),
        description="a user holding any of these roles needs a second factor to get a session "
        "or token by password (local TOTP; for OpenID Connect users the provider's acr/amr). "
        "In dev mode the default is no role (a laptop demo), unless this is set explicitly",
    )
    local_passwords: bool = Field(
        default=True,
        description="password login (API and web); false: single sign-on only, except a hub "
        "administrator (superuser) with TOTP enrolled, as break-glass",
    )
    visa_issuer: str | None = Field(
        default=None,
        description="the iss of the GA4GH visas this hub signs (its public base URL, e.g. "
        "https://hub.example.org); unset: the base URL the request came to",
    )
    visa_lifetime_seconds: int = Field(
        default=3600,
        ge=60,
        le=30 * 86400,
        description="a visa's lifetime (never past the end of its entitlement)",
    )
    trusted_visa_issuers: dict[str, str] = Field(
        default_factory=dict,
        description="external GA4GH visa issuers whose visas an application may carry as "
        "evidence: issuer (iss) -> its JWKS URL (JSON in the environment, e.g. "
        'MEDFED_TRUSTED_VISA_ISSUERS=\'{"https://rems.example.org": '
        '"https://rems.example.org/api/jwk"}\')',
    )

    @model_validator(mode="after")
    def _mfa_default_in_dev(self) -> HubSettings:
        if self.dev_mode and "mfa_required_roles" not in self.model_fields_set:
            self.mfa_required_roles = []
        return self

    @model_validator(mode="after")
    def _check_secret(self) -> HubSettings:
        if not self.secret_key:
            if not self.dev_mode:
                raise ValueError(
                    "MEDFED_SECRET_KEY is not set: give a random secret of at least "
                    f"{MIN_SECRET_BYTES} bytes (python -c 'import secrets; "
                    "print(secrets.token_hex(32))') or set MEDFED_DEV_MODE=1"
                )
            self.secret_key = dev_secret(self.data_dir)
            self._dev_key = True
        elif not self.dev_mode and len(self.secret_key.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"MEDFED_SECRET_KEY has {len(self.secret_key.encode())} bytes; it needs at "
                f"least {MIN_SECRET_BYTES} (python -c 'import secrets; "
                "print(secrets.token_hex(32))')"
            )
        return self

    #: the engine of the app these settings belong to (``create_app`` attaches it; the
    #: database blob store uses it, so its connections close with the app's)
    _engine: Engine | None = PrivateAttr(default=None)
    _dev_key: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _check_blob_store(self) -> HubSettings:
        if self.blob_store == "database" and not self.on_postgresql:
            raise ValueError(
                "blob_store = 'database' needs a PostgreSQL database_url (on SQLite a blob "
                "write would queue behind the hub's own write lock); use 'files'"
            )
        return self

    @model_validator(mode="after")
    def _check_deadlines(self) -> HubSettings:
        for name, seconds in self.run_deadlines.items():
            if not seconds > 0:
                raise ValueError(f"run_deadlines: '{name}' needs a deadline above 0 seconds")
        return self

    def warn_of_dev_key(self) -> None:
        """Log that a dev-mode key is this data folder's own, when other hubs share the database.

        Called once the database answers (a hub that cannot reach it says only that).
        """
        if self._dev_key and self.on_postgresql:
            log.warning(
                "dev mode: the secret key is %s, this data folder's own; every hub "
                "process on this PostgreSQL database needs the same MEDFED_SECRET_KEY",
                self.data_dir / DEV_KEY_FILE,
            )

    def attach_engine(self, engine: Engine) -> None:
        """The engine of the app these settings serve (see :func:`engine`)."""
        self._engine = engine

    def engine(self) -> Engine:
        """The attached engine, or one made here once (scripts that build no app)."""
        if self._engine is None:
            from medfed.hub.db.session import make_engine

            self._engine = make_engine(
                self.effective_database_url, busy_timeout=self.sqlite_busy_seconds
            )
        return self._engine

    def run_deadline(self, algorithm: str) -> float:
        """Seconds a run of ``algorithm`` may stay unanswered before the sweeper fails it."""
        return self.run_deadlines.get(algorithm, self.run_deadline_seconds)

    def zenodo_url_allowed(self, url: str) -> bool:
        """Whether ``url`` is one of :attr:`zenodo_urls` (a trailing slash aside)."""
        return url.rstrip("/") in {u.rstrip("/") for u in self.zenodo_urls}

    @property
    def on_postgresql(self) -> bool:
        return self.effective_database_url.startswith("postgresql")

    @property
    def blob_backend(self) -> Literal["database", "files"]:
        """``blob_store`` as set, else ``database`` on PostgreSQL and ``files`` on SQLite."""
        if self.blob_store is not None:
            return self.blob_store
        return "database" if self.on_postgresql else "files"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'hub.db').resolve()}"
