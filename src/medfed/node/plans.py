"""The node steward's decisions on training plans: ``DATA_DIR/plans/approvals.json``.

Each decision is ``{hash: {"decision": "approved" | "rejected", "name", "at"}}``; a plan
is identified by the SHA-256 of its normalized source
(:func:`medfed.algorithms.learning.plan.plan_hash`). The file is replaced atomically
(written to a temporary file in the same folder, fsynced, ``os.replace``), so a reader —
the running agent — sees the old decisions or the new ones, never half a file. The
approved source is kept beside it (``HASH.py``) for the steward to read later.

``medfed node plans approve|reject`` (the CLI) writes decisions; the agent reads the file
before every training run, so a decision applies at once without a restart. The agent
also copies each decision it has not logged yet into the node's run log
(:meth:`PlanApprovals.log_new_decisions`): one writer for that log, the agent.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from medfed.algorithms.learning.plan import is_plan_hash, plan_hash
from medfed.common.errors import BadRequest, PolicyRefused, Refused
from medfed.common.timeutil import utcnow
from medfed.node.runlog import RunLog

__all__ = ["PlanApprovals"]

Decision = Literal["approved", "rejected"]


class PlanApprovals:
    def __init__(self, data_dir: Path) -> None:
        self.folder = data_dir / "plans"
        self.path = self.folder / "approvals.json"

    def decisions(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise BadRequest(f"cannot read plan approvals {self.path}: {exc}") from None
        if not isinstance(data, dict):
            raise BadRequest(f"plan approvals {self.path} must be a JSON object")
        return data

    def decide(self, source: str, decision: Decision, *, name: str = "") -> str:
        """Record the steward's decision on ``source``; returns its hash."""
        digest = plan_hash(source)
        decisions = self.decisions()
        decisions[digest] = {"decision": decision, "name": name, "at": utcnow().isoformat()}
        self.folder.mkdir(parents=True, exist_ok=True)
        if decision == "approved":
            _write_atomic(self.folder / f"{digest}.py", source.encode())
        _write_atomic(self.path, json.dumps(decisions, indent=2, sort_keys=True).encode())
        return digest

    def check(self, expected_hash: str, source: str) -> None:
        """Refuse unless ``source`` hashes to ``expected_hash`` and that hash is approved.

        Called before the source is written anywhere a process could import it.
        """
        if not is_plan_hash(expected_hash):
            raise Refused(f"plan: {expected_hash!r} is not a plan hash")
        actual = plan_hash(source)
        if actual != expected_hash:
            raise PolicyRefused(
                f"plan: the source received hashes to {actual[:12]}…, not the plan "
                f"{expected_hash[:12]}… the training names"
            )
        decision = self.decisions().get(actual, {}).get("decision")
        if decision == "rejected":
            raise PolicyRefused(f"plan {actual[:12]}… was rejected by this node's steward")
        if decision != "approved":
            raise PolicyRefused(
                f"plan {actual[:12]}… is not approved at this node "
                f"(the steward runs: medfed node plans approve {actual})"
            )

    def log_new_decisions(self, runlog: RunLog) -> int:
        """Append decisions the run log does not hold yet; returns how many."""
        seen = {
            (e.get("plan"), e.get("plan_decision"), e.get("decided_at"))
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
                    "plan": digest,
                    "plan_decision": entry.get("decision"),
                    "decided_at": entry.get("at"),
                    "plan_name": entry.get("name", ""),
                }
            )
            added += 1
        return added


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
