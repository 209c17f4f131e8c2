"""Training plans: their hash, the node's approvals and the plan process that runs them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import load_file
from safetensors.torch import load_file as load_torch

from medfed.algorithms.learning.envelope import envelope_hash, training_envelope
from medfed.algorithms.learning.examples import TABULAR_LOGREG
from medfed.algorithms.learning.fedtrain import TrainParams
from medfed.algorithms.learning.loop import TrainConfig, load_plan, train_local
from medfed.algorithms.learning.plan import normalize_source, plan_hash
from medfed.common.errors import Refused
from medfed.node.executors.plan_process import PlanFailed, PlanWorker
from medfed.node.plans import PlanApprovals
from medfed.node.runlog import RunLog
from medfed.sdk.learning import initial_weights


def test_the_hash_ignores_line_endings_and_trailing_blanks_but_nothing_else() -> None:
    source = "import torch\n\ndef model(args):\n    return None\n"
    assert plan_hash(source) == plan_hash(source.replace("\n", "\r\n"))
    assert plan_hash(source) == plan_hash(source.replace("\n", "  \n") + "\n\n")
    assert plan_hash(source) != plan_hash(source.replace("return None", "return  None"))
    assert plan_hash(source) != plan_hash(source + "# a comment\n")
    import hashlib

    assert plan_hash(source) == hashlib.sha256(normalize_source(source).encode()).hexdigest()


def _envelope(**changes: object) -> dict[str, object]:
    params = {
        "plan": plan_hash(TABULAR_LOGREG),
        "initial_weights": "0" * 64,
        "columns": ["f0", "label"],
        **changes,
    }
    return training_envelope(TrainParams.model_validate(params), "cancer")


def test_only_an_approved_envelope_of_the_received_source_passes(tmp_path: Path) -> None:
    approvals = PlanApprovals(tmp_path)
    envelope = _envelope()
    digest = envelope_hash(envelope)
    with pytest.raises(Refused, match=f"training envelope {digest[:12]}… .* is not approved"):
        approvals.check(envelope, TABULAR_LOGREG, name="logreg", who={"project_id": 3})
    assert approvals.pending()[digest]["project_id"] == 3  # the steward sees who asked
    assert approvals.decide(digest[:10], "approved", reason="IRB 17") == digest
    assert approvals.pending() == {}
    assert approvals.check(envelope, TABULAR_LOGREG) == digest
    tampered = TABULAR_LOGREG.replace("sigmoid", "tanh")
    with pytest.raises(Refused, match="the source received hashes to"):
        approvals.check(envelope, tampered)  # the hub served other text for the approved hash
    approvals.decide(digest, "rejected", reason="withdrawn")
    with pytest.raises(Refused, match="was rejected"):
        approvals.check(envelope, TABULAR_LOGREG)
    assert sorted(p.name for p in (tmp_path / "plans").iterdir()) == [
        f"{plan_hash(TABULAR_LOGREG)}.py",
        "approvals.json",
        "pending.json",
    ]  # written atomically: no temporary files left


def test_each_decision_lands_once_in_the_node_run_log(tmp_path: Path) -> None:
    approvals, log = PlanApprovals(tmp_path), RunLog(tmp_path / "runs.jsonl")
    digest = approvals.approve(_envelope(), TABULAR_LOGREG)
    assert approvals.log_new_decisions(log) == 1
    assert approvals.log_new_decisions(log) == 0
    approvals.decide(digest, "rejected", reason="no")
    assert approvals.log_new_decisions(log) == 1
    decisions = [e["plan_decision"] for e in log.entries()]
    assert decisions == ["approved", "rejected"]


PROBE = """
import json, os
from torch.utils.data import TensorDataset
import torch

def model(args):
    if os.path.isdir("job"):  # in the plan process: its job folder is the one copied back
        with open(os.path.join("job", args["probe"]), "w") as f:
            json.dump({"env": sorted(os.environ), "cwd": os.getcwd()}, f)
    torch.manual_seed(0)
    return torch.nn.Linear(1, 1)

def train_set(frame, args):
    x = torch.tensor(frame[["x"]].to_numpy(dtype="float32"))
    y = torch.tensor(frame[["y"]].to_numpy(dtype="float32"))
    return TensorDataset(x, y)

def predict(model, frame, args):
    return model(torch.tensor(frame[["x"]].to_numpy(dtype="float32"))).reshape(-1)

def loss(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()
"""


def _job(folder: Path, source: str, args: dict[str, object], weights: str = PROBE) -> Path:
    folder.mkdir()
    (folder / "plan.py").write_text(source)
    pd.DataFrame({"x": np.arange(20.0), "y": 2 * np.arange(20.0)}).to_parquet(
        folder / "train.parquet"
    )
    pd.DataFrame({"x": np.arange(4.0)}).to_parquet(folder / "holdout.parquet")
    (folder / "weights.safetensors").write_bytes(initial_weights(weights, args))
    job = {"epochs": 2, "batch_size": 4, "lr": 0.001, "seed": 0, "round": 0, "args": args}
    (folder / "job.json").write_text(json.dumps({**job, "device": "auto"}))
    return folder


def test_the_plan_process_holds_no_credentials_and_writes_an_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDFED_NODE_SECRET", "mfn_secret")
    monkeypatch.setenv("MEDFED_URL", "http://hub")
    probe = tmp_path / "job" / "probe.json"  # written in the sandbox's job folder, copied back
    job = _job(tmp_path / "job", PROBE, {"probe": "probe.json"})
    worker = PlanWorker()
    try:
        worker.run(job)
        seen = json.loads(probe.read_text())
        assert not [name for name in seen["env"] if name.startswith("MEDFED")]
        assert Path(seen["cwd"]).name.startswith("medfed-plan-")
        assert Path(seen["cwd"]) != Path.cwd()
        update = load_file(str(job / "update.safetensors"))
        assert sorted(update) == ["bias", "weight"] and np.abs(update["weight"]).sum() > 0
        result = json.loads((job / "result.json").read_text())
        assert result["n_train"] == 20 and result["n_eval"] == 4
        assert "global_metrics" not in result  # metrics are the agent's, not the plan's
        predictions = load_file(str(job / "predictions.safetensors"))
        assert predictions["global"].shape == predictions["local"].shape == (4,)
        assert result["device"] == ("cuda" if torch.cuda.is_available() else "cpu")

        broken = _job(
            tmp_path / "broken", PROBE.replace("def loss", "def not_loss"), {"probe": "p.json"}
        )
        with pytest.raises(PlanFailed, match="it raised an exception") as failed:
            worker.run(broken)
        assert "does not define loss" in failed.value.detail  # for the node's log only

        stuck = _job(
            tmp_path / "stuck",
            PROBE.replace(
                "def loss(model, batch):", "def loss(model, batch):\n    time.sleep(60)"
            ).replace("import json, os", "import json, os, time"),
            {"probe": "p.json"},
        )
        started = time.monotonic()
        with pytest.raises(PlanFailed, match="time limit"):
            worker.run(stuck, timeout=1.0)  # killed, not waited for
        assert time.monotonic() - started < 30
        for output in ("update.safetensors", "result.json", "probe.json"):
            (job / output).unlink(missing_ok=True)  # the job's inputs are read-only inside
        worker.run(job)  # a fresh child serves the next job
        assert (job / "update.safetensors").exists()
    finally:
        worker.close()


def test_dp_sgd_inside_the_node_trains_the_same_tensors_and_reports_epsilon(
    tmp_path: Path,
) -> None:
    job = _job(tmp_path / "job", PROBE, {"probe": str(tmp_path / "probe.json")})
    plan = load_plan(job / "plan.py")
    frame = pd.read_parquet(job / "train.parquet")
    held = pd.read_parquet(job / "holdout.parquet")
    weights = load_torch(str(job / "weights.safetensors"))
    args = {"probe": str(tmp_path / "probe.json")}
    plain = train_local(
        plan, frame, held, weights, TrainConfig(epochs=2, batch_size=4, lr=0.001, args=args)
    )
    config = TrainConfig(epochs=2, batch_size=4, lr=0.001, args=args, dp_sgd_noise=1.0)
    private = train_local(plan, frame, held, weights, config)
    assert plain.dp_sgd_epsilon is None
    assert private.dp_sgd_epsilon is not None and 0 < private.dp_sgd_epsilon < 100
    assert sorted(private.update) == sorted(plain.update) == ["bias", "weight"]
    assert not torch.equal(private.update["weight"], plain.update["weight"])
