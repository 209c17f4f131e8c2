"""The node's script executor: approval, sandbox, output checks and the airlock.

How it runs (one ``script.run`` run, in the agent's main thread — :meth:`compute`):

1. dp mode refuses scripts (their outputs carry no noise). The run's envelope
   (:func:`~medfed.algorithms.scripts.script.script_envelope`: script hash, dataset,
   columns, declared outputs) must be approved by the steward, in the node's one approval
   store (:mod:`medfed.node.plans`); otherwise the run is refused before anything is
   written or started, and the request waits there for the steward.
2. A run this node already holds in its airlock (handed back after a lost lease) is not
   run again: the item takes the new lease and waits.
3. A fresh scratch folder under ``DATA_DIR/scripts`` gets ``script.py`` and
   ``data.parquet`` — only the requested columns, read through the run's
   :class:`~medfed.node.gate.RecordingData`, so the row-set memory sees them — and the
   runner (:mod:`.script_process`) starts in the sandbox
   (:func:`~medfed.node.executors.sandbox.sandboxed_popen`) with the node's limits and the
   task's wall-clock timeout. Its stderr goes to ``DATA_DIR/scripts/logs/run-ID.stderr``
   (the node's own log; it may hold data, it never leaves).
4. A script that fails (exit status, timeout, limits, an output file that is missing,
   too large, a link, not JSON, or with an output it did not declare) gets a fixed reason
   with no data; the node's run log records what happened.
5. Each declared output is checked (:func:`medfed.node.outputcheck.check_output`); then the
   row-set memory must accept the run's rows (else the run is withheld, like any run).
6. Any ``review`` verdict puts the whole run in the airlock (:mod:`medfed.node.airlock`),
   the hub's ledger records ``held`` with the hash of the outputs, and the run stays
   claimed; otherwise the outcome leaves at once: released outputs with their data,
   refused ones with the rule's name only.

:meth:`deliver` (the agent's airlock thread) posts the outcome of each item the steward
decided, records the decision in the run log and the hub's ledger, and marks it delivered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from medfed.algorithms.learning.envelope import envelope_hash
from medfed.algorithms.learning.plan import normalize_source
from medfed.algorithms.scripts.script import ScriptParams, script_envelope
from medfed.common.errors import Conflict, MedfedError, NotFound, PolicyRefused
from medfed.common.resources import RunAssignment, RunOutcome
from medfed.node.airlock import Airlock, AirlockItem
from medfed.node.config import NodeConfig
from medfed.node.executors.sandbox import (
    SandboxLimits,
    SandboxUnavailable,
    read_output,
    sandboxed_popen,
)
from medfed.node.gate import RecordingData, RowSetMemory
from medfed.node.gate.dominance import DominancePolicy
from medfed.node.hubclient import NodeHubClient
from medfed.node.outputcheck import CheckPolicy, check_output
from medfed.node.plans import PlanApprovals
from medfed.node.runlog import RunLog, canonical_json, sha256_hex

__all__ = ["ScriptExecutor", "leaving"]

log = logging.getLogger(__name__)

FAILED = "the script failed at the node; its steward can see why in the node log"
Audit = dict[str, Any]


def leaving(outputs: dict[str, dict[str, Any]], item: AirlockItem | None = None) -> dict[str, Any]:
    """What leaves the node for a script run: each output released (with its data) or
    refused (with the rule), after the steward's decision on the held ones when given."""
    out: dict[str, Any] = {}
    for name, entry in sorted(outputs.items()):
        verdict = entry["verdict"]
        shown: dict[str, Any] = {"kind": entry["kind"], "by": "rules"}
        if verdict == "review":
            shown["by"] = "steward"
            verdict = "pass" if item is not None and item.status == "released" else "fail"
            entry = {**entry, "rule": None if verdict == "pass" else "steward"}
        if verdict == "pass":
            shown.update(status="released", rule=None, data=entry["data"])
        elif verdict == "missing":
            shown.update(status="missing", rule=None, data=None)
        else:
            shown.update(status="refused", rule=entry["rule"], data=None)
        out[name] = shown
    return {"outputs": out}


class ScriptExecutor:
    def __init__(self, config: NodeConfig, runlog: RunLog, hub: NodeHubClient) -> None:
        self.config = config
        self.runlog = runlog
        self.hub = hub
        self.airlock = Airlock(config.data_dir)
        self.root = config.data_dir / "scripts"
        self.approvals = PlanApprovals(config.data_dir)

    def compute(
        self,
        run: RunAssignment,
        params: ScriptParams,
        data: RecordingData,
        rowsets: RowSetMemory,
        audit: Audit,
    ) -> tuple[RunOutcome | None, Audit]:
        """The run's outcome, or None while it waits in the airlock; never raises."""
        started = time.perf_counter()
        policy = self.config.policy
        envelope = script_envelope(params, run.dataset_name)
        audit.update(script=params.script, envelope=envelope_hash(envelope))

        def answer(status: str, error: str | None = None, **extra: Any) -> RunOutcome:
            return RunOutcome(
                lease_id=run.lease_id,
                status=status,
                error=error,
                duration_s=time.perf_counter() - started,
                **extra,
            )

        try:
            if policy.mode == "dp":
                raise PolicyRefused(
                    "dp mode: this node runs no scripts (their outputs carry no noise)"
                )
            self._check_approval(run, params, envelope)
        except PolicyRefused as exc:  # the request and the steward's decisions; no data
            audit["rule"] = "policy"
            return answer("refused", exc.message), audit
        held = self.airlock.by_run(run.run_id)
        if held is not None:  # handed back after a lost lease: wait on, do not run again
            self.airlock.set_lease(run.run_id, run.lease_id)
            audit.update(airlock=held.id, reclaimed=True)
            return None, audit
        try:
            outputs, detail = self._run(run, params, data)
        except SandboxUnavailable as exc:  # names bubblewrap: no data
            audit["rule"] = "policy"
            return answer("refused", str(exc)), audit
        audit.update(detail)
        if outputs is None:
            audit["rule"] = "error"
            return answer("failed", FAILED), audit
        audit["rowsets"] = data.fingerprints
        decision = rowsets.release(data.labelings, policy.min_cell_count)
        if not decision.released:
            audit.update(rule=decision.rule or "differencing", withheld="row-set rule")
            return answer("done", output_status="suppressed"), audit
        audit["verdicts"] = {n: [o["verdict"], o["rule"]] for n, o in sorted(outputs.items())}
        refused = [o["rule"] for o in outputs.values() if o["verdict"] == "fail"]
        if refused:
            audit.update(rule=_category(refused[0]), withheld=", ".join(sorted(set(refused))))
        if any(o["verdict"] == "review" for o in outputs.values()):
            item = self.airlock.hold(
                run_id=run.run_id,
                task_id=run.task_id,
                project_id=run.project_id,
                dataset=run.dataset_name,
                script=params.script,
                lease_id=run.lease_id,
                outputs=outputs,
            )
            audit["airlock"] = item.id
            self._ledger(run.run_id, "held", outputs)
            return None, audit
        return answer("done", output_status="ok", output=leaving(outputs)), audit

    def _check_approval(
        self, run: RunAssignment, params: ScriptParams, envelope: dict[str, Any]
    ) -> None:
        self.approvals.log_new_decisions(self.runlog)
        who = {"project_id": run.project_id, "task_id": run.task_id, "dataset": run.dataset_name}
        approval = self.approvals.check(envelope, params.source, name=params.name, who=who)
        self.approvals.record_run(
            approval, run_id=run.run_id, task_id=run.task_id, kind="script.run"
        )

    def _run(
        self, run: RunAssignment, params: ScriptParams, data: RecordingData
    ) -> tuple[dict[str, dict[str, Any]] | None, Audit]:
        """Run the script in the sandbox; its checked outputs (None: it failed)."""
        policy = self.config.policy
        limits = SandboxLimits.from_policy(policy)
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"run-{run.run_id}-", dir=self.root))
        stderr_path = logs / f"run-{run.run_id}.stderr"
        detail: Audit = {"sandbox": policy.sandbox, "stderr": str(stderr_path)}
        if policy.sandbox == "none":
            log.warning("run %s: the script runs WITHOUT a sandbox (sandbox = none)", run.run_id)
        try:
            (scratch / "script.py").write_text(normalize_source(params.source))
            data.select(params.columns).to_parquet(scratch / "data.parquet", index=False)
            argv = [sys.executable, "-m", "medfed.node.executors.script_process", str(scratch)]
            with open(stderr_path, "wb") as stderr:
                process = sandboxed_popen(
                    argv,
                    scratch=scratch,
                    kind=policy.sandbox,
                    limits=limits,
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                )
                try:
                    code = process.wait(timeout=params.timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                    detail["script_failure"] = "timeout"
                    return None, detail
            detail["script_exit"] = code
            if code != 0:
                detail["script_failure"] = "exit status"
                return None, detail
            try:
                raw = read_output(scratch / "outputs.json", limits.output_mb << 20)
                written = json.loads(raw)
            except (OSError, ValueError) as exc:
                detail["script_failure"] = f"outputs: {type(exc).__name__}"
                return None, detail
            return self._checked(params, written, detail), detail
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _checked(
        self, params: ScriptParams, written: Any, detail: Audit
    ) -> dict[str, dict[str, Any]] | None:
        policy = self.config.policy
        rules = CheckPolicy(
            min_cell_count=policy.min_cell_count,
            min_residual_df=policy.min_residual_df,
            dominance=DominancePolicy(policy.dominance_n, policy.dominance_k, policy.p_percent),
        )
        if not isinstance(written, dict) or set(written) - set(params.outputs):
            detail["script_failure"] = "undeclared output"
            return None
        outputs: dict[str, dict[str, Any]] = {}
        for name, kind in params.outputs.items():
            entry = written.get(name)
            if entry is None:
                outputs[name] = {"kind": kind, "verdict": "missing", "rule": None, "data": None}
                continue
            if not isinstance(entry, dict) or entry.get("kind") != kind:
                outputs[name] = {"kind": kind, "verdict": "fail", "rule": "kind", "data": None}
                continue
            verdict = check_output(kind, entry.get("data"), rules)
            kept = verdict.data if verdict.status in ("pass", "review") else None
            outputs[name] = {
                "kind": kind,
                "verdict": verdict.status,
                "rule": verdict.rule,
                "data": kept,
            }
        return outputs

    def _ledger(self, run_id: int, event: str, outputs: dict[str, Any]) -> None:
        digest = sha256_hex(canonical_json(outputs))
        try:
            self.hub.airlock_event(run_id, event, digest)
        except MedfedError as exc:
            log.warning("run %s: the hub did not record airlock %s: %s", run_id, event, exc.message)

    def held_runs(self) -> list[int]:
        return self.airlock.held_runs()

    def deliver(self) -> int:
        """Post the outcome of every item the steward decided; returns how many."""
        done = 0
        for item in self.airlock.undelivered():
            self._ledger(item.run_id, item.status, item.outputs)
            outcome = RunOutcome(
                lease_id=item.lease_id,
                status="done",
                output_status="ok",
                output=leaving(item.outputs, item),
            )
            sent = canonical_json(outcome.model_dump(mode="json"))
            try:
                self.hub.post_outcome(item.run_id, sent)
                accepted = True
            except (Conflict, NotFound) as exc:
                log.warning(
                    "airlock item %s: run %s not accepted: %s", item.id, item.run_id, exc.message
                )
                accepted = False
            self.runlog.append(
                {
                    "run_id": item.run_id,
                    "task_id": item.task_id,
                    "project_id": item.project_id,
                    "algorithm": "script.run",
                    "dataset": item.dataset,
                    "script": item.script,
                    "airlock": item.id,
                    "airlock_decision": item.status,
                    "decided_by": item.decided_by,
                    "decided_at": item.decided_at,
                    "reason_sha256": hashlib.sha256((item.reason or "").encode()).hexdigest(),
                    "status": outcome.status,
                    "output_status": outcome.output_status,
                    "sent_sha256": sha256_hex(sent),
                    "accepted": accepted,
                }
            )
            self.airlock.mark_delivered(item.id)
            done += 1
        return done


def _category(rule: str) -> str:
    """The run log's rule for a refused output (a category the hub's audit knows)."""
    return {"threshold": "threshold", "dominance": "dominance"}.get(rule, "local")
