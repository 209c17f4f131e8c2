"""The node's own check of the hub's entitlement statement, and its discovery policy.

Every run the hub hands out carries either a :class:`SignedEntitlement` (the hub's
statement that the run's project may use this dataset version here, until when, issued
when) or the ``discovery`` mark. ``NodeAgent.check_policy`` calls :func:`check_run`
before anything touches the data; a problem is answered ``refused`` with the reason, so a
run is refused at the data even if the hub were wrong or compromised in transit:

* the Ed25519 signature over ``medfed-entitlement-v1\\n`` + canonical JSON must verify
  with the hub's key — pinned in ``node.toml`` (``hub_key``), else the one the witness
  pinned on first sight, else fetched from the hub (and then pinned by the witness);
* node id, project, dataset version id and name must be this run's;
* ``revoked`` must be false and the node's own clock inside ``[not_before, not_after)``;
* ``issued_at`` must be at most ``policy.entitlement_max_age_seconds`` old (and not in
  the future beyond a small clock skew), so a statement recorded before a revocation
  cannot be replayed later;
* when the statement names a ``manifest_root``, it must be the root of the data here.

Discovery runs need no entitlement: the node answers them only with
``policy.allow_discovery`` and only for the ``count`` algorithm; :func:`round_discovery`
then rounds the count to ``policy.count_rounding`` (never below the threshold).
"""

from __future__ import annotations

import base64
import math
import weakref
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature

from medfed.common.access_resources import SignedEntitlement
from medfed.common.errors import MedfedError
from medfed.common.resources import RunAssignment
from medfed.common.timeutil import utcnow
from medfed.ledger.checkpoint import load_public
from medfed.node.config import Policy

if TYPE_CHECKING:
    from medfed.node.agent import NodeAgent

CLOCK_SKEW = timedelta(seconds=60)
DISCOVERY_ALGORITHM = "count"

__all__ = ["check_run", "round_discovery", "verify_entitlement"]

_manifests: weakref.WeakKeyDictionary[NodeAgent, dict[str, str]] = weakref.WeakKeyDictionary()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def verify_entitlement(
    signed: SignedEntitlement | None,
    *,
    hub_key: str,
    node_id: int | None,
    project_id: int,
    dataset_id: int,
    dataset_name: str,
    now: datetime,
    max_age_seconds: float,
    manifest_root: str | None = None,
) -> str | None:
    """``None`` if the statement entitles this run here and now, else the reason."""
    if signed is None:
        return "entitlement: the run carries no signed entitlement"
    st = signed.statement
    try:
        load_public(hub_key).verify(base64.b64decode(signed.signature), st.text())
    except (InvalidSignature, ValueError):
        return "entitlement: the hub's signature does not verify"
    if node_id is not None and st.node_id != node_id:
        return f"entitlement: issued for node {st.node_id}, this is node {node_id}"
    if st.project_id != project_id:
        return f"entitlement: issued for project {st.project_id}, the run is for {project_id}"
    if st.dataset_id != dataset_id or st.dataset_name != dataset_name:
        return (
            f"entitlement: issued for dataset {st.dataset_id} ({st.dataset_name}), the run "
            f"asks for {dataset_id} ({dataset_name})"
        )
    if st.revoked:
        return f"entitlement: revoked (project {project_id}, dataset {dataset_id})"
    try:
        not_before, not_after, issued = (
            _time(st.not_before),
            _time(st.not_after),
            _time(st.issued_at),
        )
    except ValueError:
        return "entitlement: malformed time in the statement"
    if now < not_before:
        return f"entitlement: not valid before {st.not_before} (node clock {now.isoformat()})"
    if now >= not_after:
        return f"entitlement: expired at {st.not_after} (node clock {now.isoformat()})"
    if issued > now + CLOCK_SKEW:
        return f"entitlement: issued in the future ({st.issued_at})"
    if now - issued > timedelta(seconds=max_age_seconds):
        return (
            f"entitlement: statement issued at {st.issued_at} is older than "
            f"{max_age_seconds:g} s (a replayed statement?)"
        )
    if st.manifest_root is not None and manifest_root not in (None, st.manifest_root):
        return "entitlement: the dataset version here differs from the entitled version"
    return None


def hub_key(agent: NodeAgent) -> str:
    """The key statements must verify with; one fetched from the hub is pinned at once.

    The agent calls this when it starts (the hub is reachable then), so a run handed out
    while the hub restarts never depends on reaching it; the witness keeps the same pin.
    """
    key = agent.config.hub_key or agent.witness.hub_key
    if key is None:
        key = agent.hub.ledger_keys().hub_key
        agent.witness.hub_key = key  # first sight, as the witness pins it
    return key


def _manifest(agent: NodeAgent, name: str) -> str | None:
    from medfed.node.manifest import manifest_root

    cache = _manifests.setdefault(agent, {})
    if name not in cache and name in agent.stores:
        cache[name] = manifest_root(agent.stores[name])
    return cache.get(name)


def check_run(agent: NodeAgent, run: RunAssignment) -> str | None:
    """The node's refusal reason for ``run`` (entitlement or discovery policy), or None."""
    policy = agent.config.policy
    if run.discovery:
        if not policy.allow_discovery:
            return "policy: this node does not answer discovery queries"
        if run.algorithm != DISCOVERY_ALGORITHM:
            return f"policy: a discovery run may only use '{DISCOVERY_ALGORITHM}'"
        return None
    try:
        key = hub_key(agent)
    except MedfedError as exc:
        return f"entitlement: cannot get the hub's key to check it ({exc.message})"
    manifest = None
    if run.entitlement is not None and run.entitlement.statement.manifest_root is not None:
        manifest = _manifest(agent, run.dataset_name)
    return verify_entitlement(
        run.entitlement,
        hub_key=key,
        node_id=agent.node_id,
        project_id=run.project_id,
        dataset_id=run.dataset_id,
        dataset_name=run.dataset_name,
        now=utcnow(),
        max_age_seconds=policy.entitlement_max_age_seconds,
        manifest_root=manifest,
    )


def round_discovery(payload: dict[str, Any] | None, policy: Policy) -> dict[str, Any] | None:
    """Round a discovery count to ``count_rounding``, never below the node's threshold."""
    step = policy.count_rounding
    if payload is None or step <= 1 or "n" not in payload:
        return payload
    n = int(payload["n"])
    if n == 0:
        return payload
    floor = math.ceil(policy.min_cell_count / step) * step
    return {**payload, "n": max(round(n / step) * step, floor)}
