"""``medfed node plans list | show HASH | approve HASH | reject HASH`` (the data steward).

The node's config (``--config node.toml``) says where the hub is and holds the node's
secret; the commands fetch plan sources from the hub with it. ``approve`` re-hashes the
text it received and records that hash (so what was shown is what is approved); the
decision lands in ``DATA_DIR/plans/approvals.json`` (atomically) and the running agent
copies it into the node's run log before its next training run.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.syntax import Syntax
from rich.table import Table

from medfed.algorithms.learning.plan import plan_hash
from medfed.cli.common import console
from medfed.common.errors import Conflict
from medfed.node.config import NodeConfig, load_config
from medfed.node.plans import Decision, PlanApprovals
from medfed.sdk.http import HubHTTP

app = typer.Typer(help="Review and approve training plans.", no_args_is_help=True)
ConfigOption = typer.Option(..., "--config", "-c", help="path to node.toml")


def _source(config: NodeConfig, digest: str) -> tuple[str, str]:
    http = HubHTTP(config.hub_url, config.node_secret())
    try:
        data = http.request("GET", f"/api/node/plans/{digest}")
    finally:
        http.close()
    source, name = str(data["source"]), str(data.get("name", ""))
    if plan_hash(source) != digest:
        raise Conflict(f"the hub sent a source that does not hash to {digest}; not shown")
    return source, name


@app.command("list")
def list_plans(config: Path = ConfigOption) -> None:
    """Plans submitted at the hub, with this node's decision on each."""
    cfg = load_config(config)
    http = HubHTTP(cfg.hub_url, cfg.node_secret())
    try:
        plans = http.request("GET", "/api/node/plans")
    finally:
        http.close()
    decisions = PlanApprovals(cfg.data_dir).decisions()
    table = Table("hash", "name", "submitted", "decision")
    for plan in plans:
        decision = decisions.get(plan["hash"], {}).get("decision", "pending")
        table.add_row(plan["hash"], plan["name"], plan["created_at"], decision)
    console.print(table)


@app.command("show")
def show(digest: str = typer.Argument(..., metavar="HASH"), config: Path = ConfigOption) -> None:
    """Print the plan's source (verified against its hash)."""
    source, name = _source(load_config(config), digest)
    console.print(f"plan {digest} ({name})")
    console.print(Syntax(source, "python", line_numbers=True))


def _decide(config: Path, digest: str, decision: Decision) -> None:
    cfg = load_config(config)
    source, name = _source(cfg, digest)
    recorded = PlanApprovals(cfg.data_dir).decide(source, decision, name=name)
    console.print(f"plan {recorded} {decision}")


@app.command("approve")
def approve(digest: str = typer.Argument(..., metavar="HASH"), config: Path = ConfigOption) -> None:
    """Allow this node to run the plan with exactly this hash."""
    _decide(config, digest, "approved")


@app.command("reject")
def reject(digest: str = typer.Argument(..., metavar="HASH"), config: Path = ConfigOption) -> None:
    """Refuse the plan with this hash (runs naming it are answered ``refused``)."""
    _decide(config, digest, "rejected")
