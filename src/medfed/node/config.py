"""``node.toml``: where the hub is, how the node proves itself, its datasets and policy.

Example::

    hub_url = "http://127.0.0.1:8000"    # https:// unless on loopback (or insecure = true)
    secret_file = "node.secret"        # or: secret = "mfn_..."
    data_dir = "var/node-a"            # the node's own log lives here
    # hub_cert_sha256 = "3f5a…"        # pin the hub's TLS certificate (64 hex digits, or a
                                       #   list during a rotation; medfed node hub-fingerprint)
    # hub_ca_file = "hub-ca.pem"       # trust only this CA for the hub (self-signed hubs)

    [policy]
    min_cell_count = 5                 # counts 0 < n < 5 are suppressed
    min_rows = 10                      # models and tests need at least this many rows
    max_param_fraction = 0.3333        # model parameters at most this fraction of rows
    min_residual_df = 10               # models keep n - p >= 10 at each node (ACRO)
    dominance_n = 2                    # a sum where the 2 largest rows make up more
    dominance_k = 0.9                  #   than 90 % of it is withheld (ACRO nk rule)
    p_percent = 0.1                    # ... or where the rest is < 10 % of the largest
    allowed_algorithms = ["*"]         # or a list of names
    allowed_projects = ["*"]           # or a list of project ids
    allow_discovery = true             # answer count-discovery runs (counts only)
    count_rounding = 10                # discovery counts rounded to the nearest 10
    # mode = "dp"                      # answer counts, means, variances, histograms and
                                       #   quantiles with calibrated noise only (default
                                       #   "exact"); every other algorithm is refused
    # [policy.dp]
    # epsilon_per_run = 0.5            # ε one run spends (split over its noisy outputs)
    # budget = 5.0                     # ε a project may spend on one dataset, in total
    # bounds = { age = [18, 100], pnodes = [0, 60] }  # public ranges sums clamp to
    # [policy.training]                # every training, whatever its approved envelope:
    # require_dp = true                #   user-level DP, with ε bounds per round and over
    # max_epsilon_per_round = 1.0      #   its approved maximum of rounds
    # max_epsilon_total = 8.0
    # require_secagg = true            #   secure aggregation
    # min_nodes = 3                    #   at least 3 nodes' updates combined per round
    sandbox = "bwrap"                  # plan/script code in bubblewrap; "none" runs it bare
    sandbox_memory_mb = 8192           # its address space (torch maps ~2.5 GiB on import)
    sandbox_cpu_seconds = 3600         # CPU seconds per sandboxed process
    sandbox_processes = 256            # processes and threads of the sandbox uid
    sandbox_file_mb = 1024             # the largest file it may write
    sandbox_output_mb = 256            # the most the node reads back from one job

    [[datasets]]
    name = "gbsg2"
    path = "data/gbsg2-a.csv"          # CSV or Parquet, relative to this file
    description = "GBSG2 share of hospital A"
    person_column = "pid"              # whose row: opted-out persons' rows are never read
                                       #   (register: medfed node optout …, docs/optout.md)
    required = ["age", "time"]         # data quality (docs/data-quality.md): never null
    ranges = { age = [18, 100] }       #   and plausible ranges, gated in the catalogue

    [[omop]]                           # an OMOP CDM 5.4 (docs/omop.md): cohorts run on it
    name = "gbsg2-omop"
    duckdb = "data/gbsg2.duckdb"       # or: url = "postgresql://user@host/db" (read only)
    schema = "main"                    # the CDM's schema ("cdm", "public", … in PostgreSQL)
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from medfed.algorithms.dp import Bounds, check_bounds
from medfed.common.errors import BadRequest
from medfed.node.tlspin import hub_tls, pins_of

log = logging.getLogger(__name__)


class DPPolicy(BaseModel):
    """dp mode's settings (``[policy.dp]``); used only when ``mode = "dp"``."""

    epsilon_per_run: float = Field(
        default=1.0, gt=0, description="ε one run spends, split over its noisy outputs"
    )
    budget: float = Field(
        default=10.0, gt=0, description="ε one project may spend on one dataset here, in total"
    )
    bounds: dict[str, Bounds] = Field(
        default_factory=dict,
        description="per column, the public [low, high] that sums and quantile grids clamp "
        "to when the researcher's parameters give none",
    )

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, bounds: dict[str, Bounds]) -> dict[str, Bounds]:
        return {name: check_bounds(pair, f"bounds of '{name}'") for name, pair in bounds.items()}


class TrainingPolicy(BaseModel):
    """``[policy.training]``: what every training at this node must have, whatever approved."""

    require_dp: bool = Field(default=False, description="refuse trainings without user-level DP")
    max_epsilon_per_round: float | None = Field(default=None, gt=0)
    max_epsilon_total: float | None = Field(default=None, gt=0, description="over max_rounds")
    require_secagg: bool = Field(default=False, description="refuse without secure aggregation")
    min_nodes: int = Field(default=1, ge=1, description="fewest nodes whose updates combine")


class Policy(BaseModel):
    min_cell_count: int = Field(default=5, ge=1)
    min_rows: int = Field(default=10, ge=1)
    max_param_fraction: float = Field(default=1 / 3, gt=0, le=1)
    min_residual_df: int = Field(
        default=10, ge=0, description="models keep rows minus parameters at least this"
    )
    dominance_n: int = Field(default=2, ge=1, le=2, description="(n, k)-dominance: n rows")
    dominance_k: float = Field(default=0.9, gt=0, le=1, description="(n, k)-dominance: share")
    p_percent: float = Field(default=0.1, ge=0, lt=1, description="p % rule: p")
    allowed_algorithms: list[str] = Field(default_factory=lambda: ["*"])
    allowed_projects: list[int | str] = Field(default_factory=lambda: list[int | str](["*"]))
    allow_discovery: bool = Field(default=True, description="answer count-discovery runs")
    count_rounding: int = Field(default=10, ge=1, description="round discovery counts to this")
    sole_release: bool = Field(
        default=False,
        description="answer tasks whose datasets are all at this node (a single-node result)",
    )
    entitlement_max_age_seconds: float = Field(
        default=600.0, gt=0, description="refuse a signed entitlement older than this"
    )
    mode: Literal["exact", "dp"] = Field(
        default="exact",
        description="exact: gated exact aggregates; dp: calibrated noise from a per-project ε "
        "budget (medfed.node.gate.dp), algorithms without a noisy variant refused",
    )
    dp: DPPolicy = Field(default_factory=DPPolicy)
    training: TrainingPolicy = Field(default_factory=TrainingPolicy)
    sandbox: Literal["bwrap", "none"] = Field(
        default="bwrap",
        description="where plan and script code runs: bwrap (bubblewrap sandbox; the node "
        'refuses such code where bubblewrap is missing) or "none" (unsandboxed, logged)',
    )
    sandbox_memory_mb: int = Field(default=8192, ge=256, description="address space, MiB")
    sandbox_cpu_seconds: int = Field(default=3600, ge=1, description="CPU seconds per process")
    sandbox_processes: int = Field(default=256, ge=8, description="processes and threads")
    sandbox_file_mb: int = Field(default=1024, ge=1, description="largest file it may write")
    sandbox_output_mb: int = Field(default=256, ge=1, description="most the node reads back")

    def allows_algorithm(self, name: str) -> bool:
        return "*" in self.allowed_algorithms or name in self.allowed_algorithms

    def allows_project(self, project_id: int) -> bool:
        allowed = {str(p) for p in self.allowed_projects}
        return "*" in allowed or str(project_id) in allowed


class DatasetConfig(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    path: Path
    description: str = ""
    summary: Path | None = Field(
        default=None,
        description="JSON of catalogue aggregates written by ingest (default: PATH.summary.json)",
    )
    person_column: str | None = Field(
        default=None,
        min_length=1,
        description="the column naming each row's person: rows of persons in the node's "
        "opt-out register are invisible to every query, training and export",
    )
    required: list[str] = Field(
        default_factory=list,
        description="columns that must not be null: checked (data quality) at registration",
    )
    ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="plausible [low, high] of numeric columns: checked at registration",
    )

    def summary_path(self) -> Path:
        return self.summary or self.path.with_name(self.path.name + ".summary.json")


class OmopConfig(BaseModel):
    """``[[omop]]``: an OMOP CDM 5.4 the node serves cohorts from (never written to)."""

    name: str = Field(min_length=1, max_length=200)
    duckdb: Path | None = Field(default=None, description="a DuckDB file holding the CDM")
    url: str | None = Field(
        default=None, description="or the hospital's PostgreSQL: postgresql://user@host/db"
    )
    schema_: str = Field(default="main", alias="schema", min_length=1, max_length=63)
    description: str = ""

    @model_validator(mode="after")
    def _one_source(self) -> OmopConfig:
        if (self.duckdb is None) == (self.url is None):
            raise ValueError(f"omop dataset '{self.name}': give exactly one of duckdb and url")
        return self


class NodeConfig(BaseModel):
    hub_url: str
    secret: str | None = None
    secret_file: Path | None = None
    data_dir: Path = Path("var/node")
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    poll_wait_seconds: float = Field(default=20.0, gt=0, le=120)
    witness_seconds: float = Field(default=5.0, gt=0, description="how often to cosign")
    hub_key: str | None = Field(default=None, description="pin the hub's checkpoint key")
    hub_cert_sha256: list[str] = Field(
        default_factory=list,
        description="pin the hub's TLS certificate: SHA-256 of its DER leaf certificate, 64 "
        "hex digits (one, or a list during a rotation); see medfed.node.tlspin",
    )
    hub_ca_file: Path | None = Field(
        default=None,
        description="PEM file of the CA(s) the node trusts for the hub instead of the usual "
        "store (e.g. a self-signed hub certificate)",
    )
    insecure: bool = Field(
        default=False,
        description="allow an http:// hub that is not on loopback (the node secret travels "
        "in clear: for a test network only)",
    )
    policy: Policy = Field(default_factory=Policy)
    datasets: list[DatasetConfig] = Field(default_factory=list)
    omop: list[OmopConfig] = Field(default_factory=list)

    @field_validator("hub_cert_sha256", mode="before")
    @classmethod
    def _pins(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return pins_of(value)  # 64 hex digits each, or a clear error
        return value

    @model_validator(mode="after")
    def _https_hub(self) -> NodeConfig:
        url = urlsplit(self.hub_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"hub_url '{self.hub_url}' is not an http(s) URL")
        if self.hub_cert_sha256 and url.scheme != "https":
            raise ValueError(
                f"hub_cert_sha256 pins a TLS certificate, but hub_url '{self.hub_url}' is not https"
            )
        if url.scheme == "http" and not self.insecure and not _loopback(url.hostname):
            raise ValueError(
                f"hub_url '{self.hub_url}' is plain http to another host: the node secret "
                "would travel in clear; use https (see docs/deployment.md), or set "
                "insecure = true for a test network"
            )
        return self

    @model_validator(mode="after")
    def _one_secret(self) -> NodeConfig:
        if (self.secret is None) == (self.secret_file is None):
            raise ValueError("give exactly one of secret and secret_file")
        names = [d.name for d in self.datasets] + [o.name for o in self.omop]
        if len(set(names)) != len(names):
            raise ValueError("dataset names must be unique within a node")
        return self

    def tls_verify(self) -> ssl.SSLContext | bool:
        """httpx's ``verify`` for every connection to the hub (pins, CA file, or defaults)."""
        return hub_tls(pins=self.hub_cert_sha256, ca_file=self.hub_ca_file)

    def node_secret(self) -> str:
        if self.secret is not None:
            return self.secret
        assert self.secret_file is not None
        try:
            return self.secret_file.read_text().strip()
        except OSError as exc:
            raise BadRequest(f"cannot read secret_file {self.secret_file}: {exc}") from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loose_modes(config: NodeConfig) -> list[str]:
    """The node's secret and data files that others than its user may read (for a warning)."""
    paths = [config.secret_file] if config.secret_file is not None else []
    if config.data_dir.is_dir():
        paths.append(config.data_dir)
        paths.extend(p for p in sorted(config.data_dir.iterdir()) if p.is_file())
    found = []
    for path in paths:
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            continue
        if mode & 0o077:
            found.append(f"{path} is readable by others (mode {mode:o}; chmod go-rwx)")
    return found


def warn_loose_modes(config: NodeConfig) -> list[str]:
    """Log a warning for each of :func:`loose_modes`; returns them."""
    found = loose_modes(config)
    for problem in found:
        log.warning("%s", problem)
    return found


def load_config(path: Path) -> NodeConfig:
    """Read and check ``node.toml``; relative paths are taken from the file's folder."""
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text())
    except OSError as exc:
        raise BadRequest(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadRequest(f"{path} is not valid TOML: {exc}") from None
    try:
        config = NodeConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "node.toml"
        raise BadRequest(f"{path}: {where}: {first['msg']}") from None
    base = path.parent
    if config.hub_ca_file is not None:
        if not config.hub_ca_file.is_absolute():
            config.hub_ca_file = base / config.hub_ca_file
        if not config.hub_ca_file.is_file():
            raise BadRequest(f"{path}: hub_ca_file: {config.hub_ca_file} is not a file")
    if config.secret_file is not None and not config.secret_file.is_absolute():
        config.secret_file = base / config.secret_file
    if not config.data_dir.is_absolute():
        config.data_dir = base / config.data_dir
    for cdm in config.omop:
        if cdm.duckdb is not None and not cdm.duckdb.is_absolute():
            cdm.duckdb = base / cdm.duckdb
    for dataset in config.datasets:
        if not dataset.path.is_absolute():
            dataset.path = base / dataset.path
        if dataset.summary is not None and not dataset.summary.is_absolute():
            dataset.summary = base / dataset.summary
    return config
