"""The steward's decisions on training envelopes: ``DATA_DIR/plans/``.

A training runs at a node only under an approved *envelope*
(:mod:`medfed.algorithms.learning.envelope`: the plan's hash plus every setting that
changes what leaves). Files, each replaced atomically (temporary file in the same folder,
fsynced, ``os.replace``) so the running agent sees old or new decisions, never half:

* ``approvals.json`` — ``{"envelopes": {hash: {"decision": "approved" | "rejected",
  "envelope", "plan", "name", "at", "reason"}}}``. A file in the old form (decisions per
  plan hash) is read as no envelope approvals at all: such a plan must be approved again,
  with its settings.
* ``pending.json`` — requests the node refused because no approval covers them:
  ``{hash: {"envelope", "plan", "name", "requested_at", "project_id", "task_id", "user",
  "entitlement", "dataset"}}``; the steward approves or rejects them (CLI or the node's
  web pages), which moves them to ``approvals.json``.
* ``PLANHASH.py`` — each plan source the node received, kept for the steward to read and
  diff (the researcher's own submission; never data).
* ``history.jsonl`` — one line per run that went ahead under an approval.

:meth:`PlanApprovals.check` runs in the agent before the source is written anywhere a
process could import it; a refusal names the envelope hash prefix, never data.
``medfed node plans …`` and the web pages write decisions; the agent copies each new
decision into its run log (:meth:`PlanApprovals.log_new_decisions`).
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Literal

from medfed.algorithms.learning.envelope import BOUNDS, covers, envelope_hash, round_epsilon
from medfed.algorithms.learning.plan import is_plan_hash, plan_hash
from medfed.common.errors import BadRequest, NotFound, PolicyRefused, Refused
from medfed.common.timeutil import utcnow
from medfed.node.config import TrainingPolicy
from medfed.node.runlog import RunLog

__all__ = ["Decision", "PlanApprovals", "policy_refusal", "source_diff"]

Decision = Literal["approved", "rejected"]


def policy_refusal(envelope: dict[str, Any], policy: TrainingPolicy) -> str | None:
    """Why the node's training policy refuses ``envelope`` (None when it allows it)."""
    if policy.require_dp and envelope.get("dp") is None:
        return "policy: this node trains only with differential privacy (dp)"
    if policy.require_secagg and envelope.get("secagg") is None:
        return "policy: this node trains only with secure aggregation (secagg)"
    if int(envelope.get("min_nodes", 1)) < policy.min_nodes:
        return f"policy: this node trains only with min_nodes >= {policy.min_nodes}"
    if envelope.get("dp") is not None:
        per_round = round_epsilon(envelope, 1)
        total = round_epsilon(envelope, int(envelope["max_rounds"]))
        assert per_round is not None and total is not None
        if policy.max_epsilon_per_round is not None and per_round > policy.max_epsilon_per_round:
            return f"policy: ε per round {per_round:.3g} exceeds {policy.max_epsilon_per_round}"
        if policy.max_epsilon_total is not None and total > policy.max_epsilon_total:
            return f"policy: ε over the rounds {total:.3g} exceeds {policy.max_epsilon_total}"
    return None


class PlanApprovals:
    _lock = threading.Lock()  # one agent and its threads; the CLI writes from its own process

    def __init__(self, data_dir: Path) -> None:
        self.folder = data_dir / "plans"
        self.path = self.folder / "approvals.json"
        self.pending_path = self.folder / "pending.json"
        self.history_path = self.folder / "history.jsonl"

    # -- files ---------------------------------------------------------------------------

    def _read(self, path: Path) -> dict[str, Any]:
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise BadRequest(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            raise BadRequest(f"{path} must be a JSON object")
        return data

    def _write(self, path: Path, data: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, json.dumps(data, indent=2, sort_keys=True).encode())

    def decisions(self) -> dict[str, dict[str, Any]]:
        """Decisions per envelope hash (an old per-plan file counts as none)."""
        envelopes = self._read(self.path).get("envelopes", {})
        return envelopes if isinstance(envelopes, dict) else {}

    def pending(self) -> dict[str, dict[str, Any]]:
        return self._read(self.pending_path)

    def source(self, digest: str) -> str | None:
        """A plan source the node received (by plan hash), if it kept one."""
        if not is_plan_hash(digest):
            return None
        path = self.folder / f"{digest}.py"
        return path.read_text() if path.exists() else None

    def _keep_source(self, source: str) -> str:
        digest = plan_hash(source)
        path = self.folder / f"{digest}.py"
        if not path.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, source.encode())
        return digest

    def resolve(self, prefix: str) -> str:
        """The full envelope hash of a pending request or decision from a unique prefix."""
        known = set(self.pending()) | set(self.decisions())
        hits = sorted(h for h in known if h.startswith(prefix.lower()))
        if not prefix or not hits:
            raise NotFound(f"no training request or approval {prefix!r} at this node")
        if len(hits) > 1:
            raise BadRequest(f"{prefix!r} names {len(hits)} requests; give more of the hash")
        return hits[0]

    # -- decisions -----------------------------------------------------------------------

    def approve(
        self, envelope: dict[str, Any], source: str, *, name: str = "", reason: str = ""
    ) -> str:
        """Approve ``envelope`` with its plan ``source`` directly; returns its hash."""
        if plan_hash(source) != envelope.get("plan"):
            raise BadRequest("the source does not hash to the envelope's plan")
        with self._lock:
            self._keep_source(source)
            return self._record(envelope, "approved", name=name, reason=reason)

    def decide(
        self,
        digest: str,
        decision: Decision,
        *,
        reason: str = "",
        bounds: dict[str, int] | None = None,
    ) -> str:
        """Decide a pending request (``digest``: its envelope hash or a unique prefix).

        ``bounds`` may raise ``max_rounds``/``max_epochs`` of an approval; the approval's
        hash is that of the envelope as approved. Returns it.
        """
        full = self.resolve(digest)
        with self._lock:
            pending = self.pending()
            request = pending.get(full) or self.decisions().get(full)
            if request is None:
                raise NotFound(f"no training request {digest!r} at this node")
            envelope = dict(request["envelope"])
            for key, value in (bounds or {}).items():
                if key not in BOUNDS:
                    raise BadRequest(f"{key!r} is not a bound of an envelope ({', '.join(BOUNDS)})")
                if int(value) < int(envelope[key]):
                    raise BadRequest(f"{key} {value} is under the request's {envelope[key]}")
                envelope[key] = int(value)
            approved = self._record(
                envelope, decision, name=str(request.get("name", "")), reason=reason
            )
            if full in pending:
                del pending[full]
                self._write(self.pending_path, pending)
            return approved

    def _record(
        self, envelope: dict[str, Any], decision: Decision, *, name: str, reason: str
    ) -> str:
        digest = envelope_hash(envelope)
        data = self._read(self.path)
        envelopes = data.get("envelopes") if isinstance(data.get("envelopes"), dict) else None
        decisions: dict[str, Any] = envelopes if envelopes is not None else {}
        decisions[digest] = {
            "decision": decision,
            "envelope": envelope,
            "plan": envelope["plan"],
            "name": name,
            "reason": reason,
            "at": utcnow().isoformat(),
        }
        self._write(self.path, {"envelopes": decisions})
        return digest

    # -- the agent's check ---------------------------------------------------------------

    def check(
        self,
        envelope: dict[str, Any],
        source: str,
        *,
        name: str = "",
        who: dict[str, Any] | None = None,
    ) -> str:
        """The hash of the approval covering ``envelope``; else record a request and refuse.

        Called before the source is written anywhere a process could import it.
        """
        expected = str(envelope.get("plan", ""))
        if not is_plan_hash(expected):
            raise Refused(f"plan: {expected!r} is not a plan hash")
        actual = plan_hash(source)
        if actual != expected:
            raise PolicyRefused(
                f"plan: the source received hashes to {actual[:12]}…, not the plan "
                f"{expected[:12]}… the training names"
            )
        digest = envelope_hash(envelope)
        decisions = self.decisions()
        if decisions.get(digest, {}).get("decision") == "rejected":
            raise PolicyRefused(
                f"training envelope {digest[:12]}… was rejected by this node's steward"
            )
        for approved, entry in decisions.items():
            if entry.get("decision") == "approved" and covers(entry.get("envelope", {}), envelope):
                return approved
        with self._lock:
            self._keep_source(source)
            pending = self.pending()
            if digest not in pending:
                pending[digest] = {
                    "envelope": envelope,
                    "plan": expected,
                    "name": name,
                    "requested_at": utcnow().isoformat(),
                    **(who or {}),
                }
                self._write(self.pending_path, pending)
        raise PolicyRefused(
            f"training envelope {digest[:12]}… (plan {expected[:12]}…) is not approved at "
            f"this node; its steward sees the request in: medfed node plans pending"
        )

    # -- history and diffs ---------------------------------------------------------------

    def record_run(self, approval: str, **info: Any) -> None:
        """Append one run that went ahead under ``approval``."""
        line = json.dumps({"approval": approval, "at": utcnow().isoformat(), **info})
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.history_path, "a") as handle:
                handle.write(line + "\n")

    def history(self, approval: str | None = None) -> list[dict[str, Any]]:
        if not self.history_path.exists():
            return []
        rows = [json.loads(line) for line in self.history_path.read_text().splitlines() if line]
        return [r for r in rows if approval is None or r.get("approval") == approval]

    def earlier_source(self, name: str, plan: str) -> tuple[str, str] | None:
        """``(plan hash, source)`` of the newest approved other version of plan ``name``."""
        best: tuple[str, str] | None = None
        newest = ""
        for entry in self.decisions().values():
            other = str(entry.get("plan", ""))
            if entry.get("decision") != "approved" or entry.get("name") != name or other == plan:
                continue
            source = self.source(other)
            if source is not None and str(entry.get("at", "")) > newest:
                newest, best = str(entry.get("at", "")), (other, source)
        return best

    def request(self, digest: str) -> dict[str, Any]:
        """One request or decision as the steward sees it (CLI and web pages alike).

        ``hash``, ``status`` (pending, approved, rejected), ``envelope``, ``who`` (project,
        task, user, entitlement, dataset), ``source``, ``diff`` (unified diff against the
        newest approved other version of the same plan name, or None) and ``runs`` (what
        ran under it).
        """
        full = self.resolve(digest)
        pending = self.pending().get(full)
        entry = pending or self.decisions()[full]
        status = "pending" if pending else str(entry.get("decision"))
        plan = str(entry["envelope"]["plan"])
        source = self.source(plan) or ""
        name = str(entry.get("name", ""))
        earlier = self.earlier_source(name, plan) if name else None
        who_keys = ("project_id", "task_id", "user", "entitlement", "dataset", "requested_at")
        return {
            "hash": full,
            "status": status,
            "name": name,
            "plan": plan,
            "envelope": entry["envelope"],
            "who": {k: entry.get(k) for k in who_keys if k in entry},
            "reason": entry.get("reason", ""),
            "at": entry.get("at"),
            "source": source,
            "earlier_plan": earlier[0] if earlier else None,
            "diff": source_diff(earlier[1], source, earlier[0], plan) if earlier else None,
            "runs": self.history(full),
        }

    def log_new_decisions(self, runlog: RunLog) -> int:
        """Append decisions the run log does not hold yet; returns how many."""
        seen = {
            (e.get("envelope"), e.get("plan_decision"), e.get("decided_at"))
            for e in runlog.entries()
            if "plan_decision" in e
        }
        added = 0
        for digest, entry in sorted(self.decisions().items(), key=lambda kv: kv[1].get("at", "")):
            key = (digest, entry.get("decision"), entry.get("at"))
            if key in seen:
                continue
            runlog.append(
                {
                    "envelope": digest,
                    "plan": entry.get("plan"),
                    "plan_decision": entry.get("decision"),
                    "decided_at": entry.get("at"),
                    "plan_name": entry.get("name", ""),
                    "reason": entry.get("reason", ""),
                }
            )
            added += 1
        return added


def source_diff(before: str, after: str, before_hash: str, after_hash: str) -> str:
    """A unified diff (difflib) of two plan versions, named by their hash prefixes."""
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=f"plan {before_hash[:12]} (approved)",
        tofile=f"plan {after_hash[:12]} (requested)",
    )
    return "".join(lines)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
