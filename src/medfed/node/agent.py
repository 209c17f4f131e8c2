"""The node agent: ``medfed node start --config node.toml``.

How it runs:

* On start it opens its tables and compares each with the version it registered before
  (``medfed.node.drift``): an unchanged file or one with new content under the same schema
  is registered at the hub (name, description, column schema, row count rounded to the
  policy threshold, manifest root; new content becomes the hub's next version), a changed
  schema or an unreadable file is refused — logged, neither registered nor served — until
  the steward acts. Runs for another version of a dataset than the one held are refused.
* Then it re-sends every result still in its outbox (``medfed.node.outbox``: results are
  written there atomically before they are posted and removed once the hub answered), so a
  node killed between computing and delivering loses nothing and doubles nothing.
* The main thread long-polls ``GET /api/node/runs/next``: the hub answers the moment a
  run for this node is committed, or with 204 after the wait; then it polls again. It
  posts each outcome with ``?next=true``: when another run waits, the hub claims it in
  the answer's transaction and hands it over in the response, so a busy node runs it
  without polling again.
* A witness thread checks each new checkpoint of the hub's audit log for consistency
  with the last one it cosigned and cosigns it (``medfed.node.witness``).
* A heartbeat thread reports every ``heartbeat_seconds`` and extends the lease of the run
  being executed, so long local steps keep their lease.
* Each run is checked against the node's own policy (algorithm allowed, project allowed,
  dataset held here, the hub's signed entitlement valid now — ``medfed.node.entitlements``
  — algorithm version known) — a failed check is answered ``refused``
  with the rule (none of these depends on the data). Then the local step runs over a
  :class:`~medfed.node.gate.RecordingData` view of the table, the gate's output rules
  (threshold, grid, tail cells), its dominance rules for sums and means
  (:mod:`medfed.node.gate.dominance`) and then its row-set rules (subset, differencing: the
  dataset's :class:`~medfed.node.gate.RowSetMemory`) decide, and the outcome is posted.
* In dp mode (``[policy] mode = "dp"``) the algorithm must declare a noisy variant, the
  project's ε budget on the dataset is charged before the data is read
  (:mod:`medfed.node.gate.budget`; past it: ``refused``), and the output leaves with
  OpenDP noise (:mod:`medfed.node.gate.dp`) instead of the output and row-set rules.
* Whatever the data made the node hold back — a local step's refusal, a rule of the gate,
  no usable rows — is answered the same way: ``done`` with output ``suppressed`` and no
  text, so 0 rows, a few rows and a refused split look alike from outside. The exact
  reason goes to the node's own log only. An unexpected error is answered ``failed`` with
  a fixed text (an exception message could carry a data value).
* Every run lands in the node's log with a keyed hash of its filter, keyed fingerprints
  of the row sets it used and, when withheld, the rule (``medfed node queries``). The
  outcome carries the filter hash, one fingerprint of the row sets and the rule's category
  to the hub's audit (``medfed.node.audit``), never the reason.

All connections are outbound. Every hub error that may pass (cannot connect, timeout, 5xx,
a JSON 503 during a database outage, 429) is retried with capped, jittered exponential
backoff for as long as it lasts (``medfed.node.hubclient``); the node exits only on a
local fatal error (a bad secret, a full disk) or when stopped — run it under a supervisor
that restarts it on failure (``docs/medfed-node.service``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from medfed.algorithms.base import Algorithm, LocalContext
from medfed.algorithms.dp import DPSettings
from medfed.algorithms.registry import get_algorithm
from medfed.common.arrays import outcome_body
from medfed.common.errors import BadRequest, Conflict, MedfedError, NotFound, PolicyRefused
from medfed.common.resources import DatasetRegister, RunAssignment, RunOutcome
from medfed.ledger.checkpoint import Checkpoint
from medfed.node import entitlements
from medfed.node.audit import outcome_audit
from medfed.node.config import NodeConfig
from medfed.node.drift import DriftRecord
from medfed.node.executors.plan_process import PlanFailed
from medfed.node.executors.scripts import ScriptExecutor
from medfed.node.executors.services import NodeLearning
from medfed.node.gate import GatePolicy, RecordingData, RowSetMemory, apply_gate
from medfed.node.gate.budget import BudgetLedger
from medfed.node.gate.dominance import DominancePolicy, dominated
from medfed.node.gate.dp import privatize
from medfed.node.hubclient import NodeHubClient
from medfed.node.manifest import manifest_root
from medfed.node.outbox import Outbox, Pending
from medfed.node.quality import omop_quality, table_quality, with_quality
from medfed.node.runlog import RunLog, canonical_json, file_hash, sha256_hex
from medfed.node.stores.omop_datasets import CohortRun, OmopDataset, cohort_of_run
from medfed.node.stores.optout import OptOutRegister, register_path
from medfed.node.stores.registered import registered_count
from medfed.node.stores.tables import TableStore
from medfed.node.witness import BadCheckpoint, ForkDetected, Witness
from medfed.sdk.http import HubUnreachable

log = logging.getLogger(__name__)


def rounded_count(n: int, threshold: int) -> int | None:
    """Row counts leave the node rounded to the nearest multiple of the threshold."""
    if n < threshold:
        return None
    return int(round(n / threshold) * threshold)


def read_summary(path: Path) -> dict[str, Any] | None:
    """The catalogue aggregates ingest wrote beside a dataset (already gated), if any."""
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadRequest(f"cannot read dataset summary {path}: {exc}") from None
    if not isinstance(summary, dict):
        raise BadRequest(f"dataset summary {path} must be a JSON object")
    return summary


class NodeAgent:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self.hub = NodeHubClient(
            config.hub_url, config.node_secret(), stop=self.stop_event, verify=config.tls_verify()
        )
        self.stores: dict[str, TableStore] = {}
        #: OMOP CDMs (``[[omop]]``): tasks on them name a saved cohort (issue 16)
        self.omop: dict[str, OmopDataset] = {}
        self.hashes: dict[str, str] = {}
        #: datasets withheld at this node (changed schema, unreadable file) and why
        self.refused: dict[str, str] = {}
        #: the hub's id of the version of each dataset this node holds (once registered)
        self.dataset_ids: dict[str, int] = {}
        self.drift = DriftRecord(config.data_dir)
        self.outbox = Outbox(config.data_dir / "outbox")
        self.rowsets: dict[str, RowSetMemory] = {}
        #: dp mode's ε per project and dataset (created on the first dp run)
        self.budget = BudgetLedger(config.data_dir / "dp" / "budget.sqlite3")
        self.runlog = RunLog(config.data_dir / "runs.jsonl")
        #: the patient opt-out register, applied by the stores (medfed.node.stores.optout)
        self.optout = OptOutRegister(register_path(config.data_dir), secret=config.node_secret())
        self._optout_digest: str | None = None
        self._current: set[int] = set()
        self._lock = threading.Lock()
        self.node_id: int | None = None
        self.witness = Witness(config.data_dir / "witness", hub_key=config.hub_key)
        self.learning = NodeLearning(
            hub_url=config.hub_url,
            secret=config.node_secret(),
            data_dir=config.data_dir,
            runlog=self.runlog,
            policy=config.policy,
            rowsets=self.rowsets,
            verify=self.hub.verify,
        )
        self.learning.tables = self.stores  # the same dict: image validation's labels
        self.learning.dataset_paths = {d.name: d.path for d in config.datasets}
        self.fork: str | None = None
        #: researcher scripts: sandbox, output checks, the airlock (medfed.node.airlock)
        self.scripts = ScriptExecutor(config, self.runlog, self.hub)

    def open_datasets(self) -> None:
        for dataset in self.config.datasets:
            try:
                store = TableStore.open(
                    dataset.path,
                    person_column=dataset.person_column,
                    excluded_persons=self.optout.excluded if dataset.person_column else None,
                )
            except BadRequest as exc:  # the others are still served
                self._withhold(dataset.name, f"dataset '{dataset.name}': {exc.message}")
                continue
            self.stores[dataset.name] = store
            self.hashes[dataset.name] = file_hash(dataset.path)
            self.rowsets[dataset.name] = RowSetMemory(
                self.config.data_dir / "rowsets",
                self.hashes[dataset.name],
                store.row_count,
                hidden=store.hidden_mask(),
            )
        for cdm in self.config.omop:
            try:
                omop = OmopDataset.open(
                    name=cdm.name,
                    duckdb_path=cdm.duckdb,
                    url=cdm.url,
                    schema=cdm.schema_,
                    description=cdm.description,
                    excluded_persons=self.optout.excluded_person_ids,
                    memory_dir=self.config.data_dir / "rowsets",
                )
            except BadRequest as exc:  # named; the other datasets are still served
                self._withhold(cdm.name, f"omop dataset '{cdm.name}': {exc.message}")
                continue
            self.omop[cdm.name] = omop
            self.hashes[cdm.name] = omop.sha256
            self.rowsets[cdm.name] = omop.memory

    def _audit_key(self) -> bytes:
        """The key of the run log's filter hashes and row-set fingerprints (node-only)."""
        secret = self.config.node_secret().encode()
        return hmac.new(secret, b"medfed row-set audit", hashlib.sha256).digest()

    def _withhold(self, name: str, message: str) -> None:
        """Neither register nor serve ``name``; the steward reads why in the node's log."""
        log.error("%s", message)
        self.refused[name] = message
        store = self.stores.pop(name, None)
        if store is not None:
            store.close()
        self.rowsets.pop(name, None)
        self.runlog.append({"alarm": "dataset", "dataset": name, "problem": message})

    def register(self) -> None:
        identity = self.hub.me()
        self.node_id = identity.id
        threshold = self.config.policy.min_cell_count
        for dataset in self.config.datasets:
            store = self.stores.get(dataset.name)
            if store is None:
                continue  # withheld when opened
            root = manifest_root(store)
            verdict = self.drift.check(dataset.name, store.columns, root)
            if verdict.kind == "schema":
                self._withhold(dataset.name, verdict.message(dataset.name))
                continue
            if verdict.kind == "content":
                log.warning(
                    "dataset '%s': the file's content changed since version %s (same schema); "
                    "registering it as a new version",
                    dataset.name,
                    verdict.version,
                )
            try:  # the checks declared in node.toml (docs/data-quality.md), gated
                quality = table_quality(
                    store,
                    required=dataset.required,
                    ranges=dataset.ranges,
                    min_cell_count=threshold,
                    rounding=threshold,
                    table=dataset.name,
                    memory=self.optout,
                )
            except BadRequest as exc:
                self._withhold(dataset.name, f"dataset '{dataset.name}': {exc.message}")
                continue
            answer = self.hub.register_dataset(
                DatasetRegister(
                    name=dataset.name,
                    description=dataset.description,
                    columns=store.columns,
                    row_count=self._registered_count(dataset.name, store, threshold),
                    summary=with_quality(read_summary(dataset.summary_path()), quality),
                    manifest_root=root,
                )
            )
            self.dataset_ids[dataset.name] = int(answer["id"])
            self.drift.registered(
                dataset.name,
                columns=store.columns,
                manifest_root=root,
                dataset_id=int(answer["id"]),
                version=int(answer.get("version", 1)),
            )
        for name, omop in self.omop.items():
            entry = omop.registration(
                min_cell_count=threshold, rounding=threshold, memory=self.optout
            )
            quality = omop_quality(
                omop.store, min_cell_count=threshold, rounding=threshold, memory=self.optout
            )
            entry = entry.model_copy(update={"summary": with_quality(entry.summary, quality)})
            answer = self.hub.register_dataset(entry)
            self.dataset_ids[name] = int(answer["id"])
        log.info("node %s registered %d dataset(s)", identity.name, len(self.dataset_ids))

    def _registered_count(self, name: str, store: TableStore, threshold: int) -> int | None:
        """Rows after opt-out, rounded, and sticky while within one rounding step."""
        return registered_count(
            store.count(),
            key=name,
            memory=self.optout,
            min_cell_count=threshold,
            rounding=threshold,
        )

    def reconcile_optout(self) -> None:
        """Before each run: a changed register goes to the node's log and the hub's ledger.

        The stores ask the register before every query anyway; this records the change —
        its last reconciliation time in the run log, its keyed hash at the hub — never
        how many persons it holds.
        """
        digest = self.optout.digest()
        if digest == self._optout_digest:
            return
        self.runlog.append(
            {
                "event": "optout",
                "register_hmac": digest,
                "reconciled_at": self.optout.last_reconciled(),
            }
        )
        try:
            self.hub.ledger_fact("optout.register", digest)
        except MedfedError as exc:  # tried again before the next run
            log.warning("opt-out register hash not recorded at the hub: %s", exc.message)
            return
        self._optout_digest = digest

    def run_forever(self) -> None:
        self.open_datasets()
        self.register()
        self.reconcile_optout()
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        self.hub.register_witness_key(self.witness.public_key)
        entitlements.hub_key(self)  # pin the key entitlement statements are checked with
        watch = threading.Thread(target=self._witness_loop, name="witness", daemon=True)
        watch.start()
        airlock = threading.Thread(target=self._airlock_loop, name="airlock", daemon=True)
        airlock.start()
        for item in self.outbox.pending():  # results a previous run of the node computed
            log.info("run %s: re-sending the result kept on disk", item.run_id)
            if not self.deliver(item):
                break
        while not self.stop_event.is_set():
            try:
                assignment = self.hub.next_run(self.config.poll_wait_seconds)
            except HubUnreachable:
                break  # only raised once stop was requested
            except MedfedError as exc:  # a 4xx: an answer, not an outage
                log.error("polling the hub failed: %s", exc.message)
                self.stop_event.wait(1.0)
                continue
            while assignment is not None:  # a run handed out with an answer runs next
                assignment = self.execute(assignment)
        self.learning.close()
        self.hub.close()

    def stop(self) -> None:
        self.stop_event.set()

    def _heartbeat_loop(self) -> None:
        while not self.stop_event.wait(self.config.heartbeat_seconds):
            with self._lock:
                current = self._current | set(self.scripts.held_runs())
            try:  # results waiting in the outbox keep their leases too
                self.hub.heartbeat(sorted(current | set(self.outbox.run_ids())))
            except MedfedError as exc:
                log.warning("heartbeat failed: %s", exc.message)
            except Exception:  # a malformed answer (a proxy's page): try again next beat
                log.exception("heartbeat failed")

    def _airlock_loop(self) -> None:
        """Post the outcome of each run the steward released or refused from the airlock."""
        while not self.stop_event.wait(1.0):
            try:
                self.scripts.deliver()
            except MedfedError as exc:
                log.warning("airlock delivery failed: %s", exc.message)
            except Exception:  # kept on disk: delivered on a later pass
                log.exception("airlock delivery failed")

    def witness_once(self) -> bool:
        """Check the hub's newest checkpoint and cosign it; False once a fork was seen."""
        if self.fork is not None:
            return False
        latest = self.hub.latest_checkpoint()
        if latest is None:
            return True
        checkpoint = Checkpoint(
            latest.origin, latest.size, latest.root, latest.time, latest.signature
        )
        sizes = self.witness.needs_proof(checkpoint)
        proof = self.hub.consistency(*sizes) if sizes and sizes[0] < sizes[1] else None
        try:
            signature = self.witness.check(checkpoint, self.hub.ledger_keys().hub_key, proof)
        except (ForkDetected, BadCheckpoint) as exc:
            self.fork = str(exc)
            log.critical("audit log: %s; this node stops cosigning", exc)
            self.runlog.append({"alarm": "ledger", "problem": str(exc), "size": latest.size})
            return False
        if signature is not None:
            self.hub.cosign(checkpoint.size, signature)
        return True

    def _witness_loop(self) -> None:
        while not self.stop_event.wait(self.config.witness_seconds):
            try:
                if not self.witness_once():
                    return
            except MedfedError as exc:
                log.warning("witness check failed: %s", exc.message)
            except Exception:  # a malformed answer: checked again on the next pass
                log.exception("witness check failed")

    def check_policy(self, run: RunAssignment) -> str | None:
        policy = self.config.policy
        if not policy.allows_project(run.project_id):
            return f"policy: project {run.project_id} is not allowed at this node"
        if not policy.allows_algorithm(run.algorithm):
            return f"policy: algorithm '{run.algorithm}' is not allowed at this node"
        if run.dataset_name in self.refused:
            return (
                f"policy: dataset '{run.dataset_name}' is withheld at this node until its "
                "steward registers its changed file as a new version"
            )
        if run.dataset_name not in self.stores and run.dataset_name not in self.omop:
            return f"policy: dataset '{run.dataset_name}' is not held at this node"
        cohort = isinstance(run.params, dict) and run.params.get("cohort") is not None
        if run.dataset_name in self.omop and (not cohort or run.algorithm == "script.run"):
            return f"policy: dataset '{run.dataset_name}' is an OMOP CDM: tasks name a cohort"
        if run.dataset_name in self.omop and policy.mode == "dp":
            return "policy: dp mode answers no cohort tasks"
        if cohort and run.dataset_name not in self.omop:
            return f"policy: dataset '{run.dataset_name}' is not an OMOP CDM"
        held = self.dataset_ids.get(run.dataset_name)
        if held is not None and run.dataset_id != held:
            return (
                f"policy: dataset id {run.dataset_id} is not the version of "
                f"'{run.dataset_name}' this node holds now (id {held}); its file changed"
            )
        if run.task_nodes < 2 and not run.discovery and not policy.sole_release:
            return "policy: this node does not release results of single-node tasks"
        refusal = entitlements.check_run(self, run)
        if refusal is not None:
            return refusal
        try:
            alg = get_algorithm(run.algorithm)
        except BadRequest:
            return f"algorithm '{run.algorithm}' is not installed at this node"
        if alg.version != run.algorithm_version:
            return (
                f"algorithm '{run.algorithm}' version {run.algorithm_version} asked, "
                f"this node has {alg.version}"
            )
        return None

    def compute(self, run: RunAssignment) -> RunOutcome | None:
        """Policy check, local step and gate; never raises (None: held in the airlock)."""
        return self._compute(run)[0]

    def _compute(self, run: RunAssignment) -> tuple[RunOutcome | None, dict[str, Any]]:
        """The outcome (None while held in the airlock), and what the node's log records."""
        started = time.perf_counter()
        key = self._audit_key()
        where = run.params.get("where") if isinstance(run.params, dict) else None
        audit: dict[str, Any] = {
            "filter_hmac": hmac.new(key, canonical_json(where), hashlib.sha256).hexdigest()[:32]
        }
        refusal = self.check_policy(run)
        if refusal is not None:
            audit["rule"] = "policy"
            return RunOutcome(lease_id=run.lease_id, status="refused", error=refusal), audit
        alg = get_algorithm(run.algorithm)
        policy = self.config.policy

        def withheld(rule: str, reason: str) -> tuple[RunOutcome, dict[str, Any]]:
            audit.update(rule=rule, withheld=reason)
            outcome = RunOutcome(
                lease_id=run.lease_id,
                status="done",
                output_status="suppressed",
                duration_s=time.perf_counter() - started,
            )
            return outcome, audit

        try:
            params = alg.parse_params(run.params)
        except MedfedError as exc:  # the parameters alone: no data behind this message
            audit["rule"] = "parameters"
            return RunOutcome(lease_id=run.lease_id, status="failed", error=exc.message), audit
        cohort: CohortRun | None = None
        if run.dataset_name in self.omop:  # generate the task's cohort here (issue 16)
            try:
                cohort = self._cohort_run(run, key, audit)
            except MedfedError as exc:  # the definition against the vocabulary: no data
                audit["rule"] = "parameters"
                return RunOutcome(lease_id=run.lease_id, status="failed", error=exc.message), audit
            except Exception as exc:  # the message could hold a data value: its type only
                log.exception("run %s: cohort generation failed", run.run_id)
                audit.update(rule="error", withheld=type(exc).__name__)
                return RunOutcome(
                    lease_id=run.lease_id,
                    status="failed",
                    error="cohort generation failed at the node; its steward can see why",
                ), audit
        if alg.name == "script.run":  # sandbox, output checks, airlock
            data = RecordingData(self.stores[run.dataset_name], key=key)
            return self.scripts.compute(run, params, data, self.rowsets[run.dataset_name], audit)
        if policy.mode == "dp" and not run.discovery:
            return self._compute_dp(run, alg, params, audit, withheld)
        data = (
            cohort.data
            if cohort is not None
            else RecordingData(self.stores[run.dataset_name], key=key)
        )
        services: object = cohort if cohort is not None and alg.name == "cohort_counts" else None
        try:
            ctx = LocalContext(
                data=data,
                round=run.round,
                state=run.state,
                min_cell_count=policy.min_cell_count,
                min_rows=policy.min_rows,
                max_param_fraction=policy.max_param_fraction,
                min_residual_df=policy.min_residual_df,
                services=services if services is not None else self.learning.for_run(run),
                recorder=data,
            )
            output = alg.local(params, ctx)
            gated = apply_gate(
                output, alg.disclosure(params), GatePolicy(min_cell_count=policy.min_cell_count)
            )
        except PlanFailed as exc:  # a fixed reason out; the plan's own message stays here
            log.warning("run %s: %s — %s", run.run_id, exc.reason, exc.detail)
            audit.update(rule="sandbox", withheld=exc.detail or exc.kind)
            return RunOutcome(lease_id=run.lease_id, status="failed", error=exc.reason), audit
        except PolicyRefused as exc:  # what the run asks, not what the data holds
            audit["rule"] = "policy"
            return RunOutcome(lease_id=run.lease_id, status="refused", error=exc.message), audit
        except MedfedError as exc:  # a check of the data said no: withheld like any rule
            return withheld("local", exc.message)
        except Exception as exc:  # the message could hold a data value: its type only
            log.exception("run %s failed", run.run_id)
            audit["rule"] = "error"
            audit["withheld"] = type(exc).__name__
            return RunOutcome(
                lease_id=run.lease_id,
                status="failed",
                error="local step failed at the node; its steward can see why in the node log",
            ), audit
        audit["rowsets"] = data.fingerprints
        if gated.status != "ok":
            return withheld("threshold", gated.reason or "output rule")
        rules = DominancePolicy(policy.dominance_n, policy.dominance_k, policy.p_percent)
        hit = dominated(data.magnitudes_seen, rules)
        if hit is not None:
            return withheld("dominance", hit)
        decision = self.rowsets[run.dataset_name].release(data.labelings, policy.min_cell_count)
        audit["cells"] = decision.cells_after
        if not decision.released:
            return withheld(
                decision.rule or "differencing",
                "the rows used would split a released row set into a part under min_cell_count",
            )
        if run.discovery:
            gated = replace(gated, payload=entitlements.round_discovery(gated.payload, policy))
        outcome = RunOutcome(
            lease_id=run.lease_id,
            status="done",
            output_status=gated.status,
            output=gated.payload,
            duration_s=time.perf_counter() - started,
        )
        return outcome, audit

    def _cohort_run(self, run: RunAssignment, key: bytes, audit: dict[str, Any]) -> CohortRun:
        """The run's saved cohort generated over this node's CDM, features extracted."""
        found = cohort_of_run(run.params)
        if found is None:
            raise BadRequest("cohort: the run names no cohort")
        cohort, spec = found
        audit["cohort"] = {"id": cohort.id, "version": cohort.version, "sha256": cohort.hash}
        return self.omop[run.dataset_name].prepare(
            cohort, spec, key=key, rounding=self.config.policy.count_rounding
        )

    def _compute_dp(
        self,
        run: RunAssignment,
        alg: Algorithm[Any],
        params: Any,
        audit: dict[str, Any],
        withheld: Callable[[str, str], tuple[RunOutcome, dict[str, Any]]],
    ) -> tuple[RunOutcome, dict[str, Any]]:
        """dp mode: declarations and budget first, then the local step and the noise.

        No output rule or row-set rule runs (a withheld answer would itself depend on the
        exact data); the budget refuses, before the data is read, a run past the project's
        ε on this dataset (``medfed.node.gate.budget``).
        """
        started = time.perf_counter()
        policy = self.config.policy
        data = RecordingData(self.stores[run.dataset_name], key=self._audit_key())
        ctx = LocalContext(
            data=data,
            round=run.round,
            state=run.state,
            min_cell_count=policy.min_cell_count,
            min_rows=policy.min_rows,
            max_param_fraction=policy.max_param_fraction,
            dp=DPSettings(bounds=policy.dp.bounds),
        )
        audit["mode"] = "dp"
        try:
            rules = alg.noise(params, ctx)
            if rules is None:
                raise PolicyRefused(
                    f"dp mode: this node answers only with calibrated noise, and "
                    f"'{alg.name}' has no noisy variant"
                )
            charge = self.budget.charge(
                project_id=run.project_id,
                dataset=run.dataset_name,
                epsilon=policy.dp.epsilon_per_run,
                budget=policy.dp.budget,
                run_id=run.run_id,
            )
        except PolicyRefused as exc:  # the parameters, the policy and past runs; no data
            audit["rule"] = "policy"
            return RunOutcome(lease_id=run.lease_id, status="refused", error=exc.message), audit
        except MedfedError as exc:  # bad parameters (a malformed bound): no data behind it
            audit["rule"] = "parameters"
            return RunOutcome(lease_id=run.lease_id, status="failed", error=exc.message), audit
        except Exception as exc:  # a bug in a declaration: the run fails, nothing is spent
            log.exception("run %s: dp declarations failed", run.run_id)
            audit.update(rule="error", withheld=type(exc).__name__)
            return RunOutcome(
                lease_id=run.lease_id, status="failed", error="dp declarations failed at the node"
            ), audit
        audit["epsilon"] = charge.epsilon
        audit["epsilon_spent"] = charge.spent
        try:
            payload, releases = privatize(alg.local(params, ctx), rules, charge.epsilon)
        except PolicyRefused as exc:
            audit["rule"] = "policy"
            return RunOutcome(lease_id=run.lease_id, status="refused", error=exc.message), audit
        except MedfedError as exc:  # a check of the data said no: withheld like any rule
            return withheld("local", exc.message)
        except Exception as exc:  # the message could hold a data value: its type only
            log.exception("run %s failed", run.run_id)
            audit.update(rule="error", withheld=type(exc).__name__)
            return RunOutcome(
                lease_id=run.lease_id,
                status="failed",
                error="local step failed at the node; its steward can see why in the node log",
            ), audit
        audit["rowsets"] = data.fingerprints
        audit["releases"] = [{"keys": list(r.keys), "scale": r.scale} for r in releases]
        payload["dp"] = charge.entry()
        outcome = RunOutcome(
            lease_id=run.lease_id,
            status="done",
            output_status="ok",
            output=payload,
            duration_s=time.perf_counter() - started,
        )
        return outcome, audit

    def execute(self, run: RunAssignment) -> RunAssignment | None:
        """Run one assignment and deliver its outcome; the node's next run when the hub
        handed one out with its answer (asked for unless the node is stopping)."""
        with self._lock:
            self._current.add(run.run_id)
        try:
            self.reconcile_optout()
            outcome, audit = self._compute(run)
            if outcome is None:  # held in the airlock: posted once the steward decided
                self.runlog.append(
                    {"run_id": run.run_id, "task_id": run.task_id, "status": "held", **audit}
                )
                return None
            # the hub's audit gets the keyed hashes and the rule's category, nothing more
            where = run.params.get("where") if isinstance(run.params, dict) else None
            summary = outcome_audit(self._audit_key(), where, audit)
            audit["rowset_fingerprint"] = summary["rowset_fingerprint"]
            outcome = outcome.model_copy(update=summary)
            sent = outcome_body(outcome)  # JSON, or JSON and arrays framed (binary)
            item = self.outbox.put(
                run.run_id,
                run.lease_id,
                sent,
                {
                    "run_id": run.run_id,
                    "task_id": run.task_id,
                    "project_id": run.project_id,
                    "round": run.round,
                    "algorithm": run.algorithm,
                    "algorithm_version": run.algorithm_version,
                    "dataset": run.dataset_name,
                    "dataset_sha256": self.hashes.get(run.dataset_name),
                    "status": outcome.status,
                    "output_status": outcome.output_status,
                    "sent_sha256": sha256_hex(sent),
                    **audit,
                },
            )
        finally:
            with self._lock:
                self._current.discard(run.run_id)
        return self._deliver(item, take_next=not self.stop_event.is_set())[1]

    def deliver(self, item: Pending) -> bool:
        """Post a stored result until the hub answers it; False if the node stops first.

        Accepted, or refused for good (409: the lease is gone and the run was handed out
        again; 404), the file is removed and the run log says which. Any other 4xx means
        this answer can never be accepted (too large, malformed): the run is answered
        ``failed`` with a fixed text instead, so its task does not wait for it.
        """
        return self._deliver(item, take_next=False)[0]

    def _deliver(self, item: Pending, *, take_next: bool) -> tuple[bool, RunAssignment | None]:
        """:meth:`deliver`, and the run the hub handed out with its answer (``take_next``)."""
        handed = None
        try:
            handed = self.hub.post_outcome(item.run_id, item.body, take_next=take_next)
            accepted = True
        except (Conflict, NotFound) as exc:
            log.warning("run %s: result dropped, the hub refused it: %s", item.run_id, exc.message)
            accepted = False
        except HubUnreachable:
            log.info("run %s: stopping; the result stays on disk for the next start", item.run_id)
            return False, None
        except MedfedError as exc:
            log.error("run %s: the hub refused the result: %s", item.run_id, exc.message)
            accepted = False
            failed = RunOutcome(
                lease_id=item.lease_id,
                status="failed",
                error=f"the hub refused this node's answer (HTTP {exc.status_code})",
            )
            try:
                self.hub.post_outcome(item.run_id, canonical_json(failed.model_dump(mode="json")))
            except MedfedError as again:
                log.error("run %s: could not report the failure: %s", item.run_id, again.message)
        self.runlog.append({**item.entry, "accepted": accepted})
        self.outbox.remove(item)
        return True, handed


def start(config: NodeConfig) -> NodeAgent:
    """Run an agent in a background thread (tests, in-process federations)."""
    agent = NodeAgent(config)
    thread = threading.Thread(target=agent.run_forever, name="node-agent", daemon=True)
    thread.start()
    return agent
