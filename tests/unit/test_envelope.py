"""Envelopes (approval of the whole training request), node-computed metrics, blob kinds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.model_selection import train_test_split

from medfed.algorithms.learning.envelope import covers, envelope_hash, training_envelope
from medfed.algorithms.learning.examples import TABULAR_LOGREG
from medfed.algorithms.learning.fedtrain import TrainParams
from medfed.algorithms.learning.holdout import HoldoutRule, split
from medfed.algorithms.learning.metrics import check_predictions, compute_metrics
from medfed.algorithms.learning.plan import plan_hash
from medfed.common.errors import BadRequest, Refused
from medfed.node.config import TrainingPolicy
from medfed.node.plans import PlanApprovals, policy_refusal, source_diff

BASE = {
    "plan": plan_hash(TABULAR_LOGREG),
    "initial_weights": "a" * 64,
    "columns": ["f0", "f1", "label"],
    "rounds": 10,
    "local_epochs": 2,
    "batch_size": 16,
}


def _envelope(**changes: object) -> dict[str, object]:
    return training_envelope(TrainParams.model_validate({**BASE, **changes}), "cancer")


def test_the_envelope_hash_is_canonical_and_every_setting_changes_it() -> None:
    envelope = _envelope()
    reordered = dict(reversed(list(envelope.items())))
    assert envelope_hash(reordered) == envelope_hash(envelope)
    assert envelope["features"] == ["f0", "f1"] and envelope["label"] == "label"
    changes = [
        {"holdout": {"fraction": 0.3}},
        {"initial_weights": "b" * 64},
        {"batch_size": 1},
        {"min_nodes": 3},
        {"lr": 1.0},
        {"columns": ["f0", "label"]},
        {"dp": {"clip": 1.0, "noise_multiplier": 1.0}},
        {"secagg": {"threshold": 0.6}},
        {"metrics": "regression"},
        {"min_rows_per_update": 50},
    ]
    hashes = {envelope_hash(_envelope(**c)) for c in changes}
    assert len(hashes) == len(changes) and envelope_hash(envelope) not in hashes


def test_an_approval_covers_fewer_rounds_and_epochs_but_no_other_change() -> None:
    approved = _envelope()
    assert covers(approved, _envelope(rounds=3, local_epochs=1))
    assert not covers(approved, _envelope(rounds=11))
    assert not covers(approved, _envelope(local_epochs=3))
    assert not covers(approved, _envelope(batch_size=1))


def test_a_changed_envelope_is_refused_and_waits_for_the_steward(tmp_path: object) -> None:
    from pathlib import Path

    approvals = PlanApprovals(Path(str(tmp_path)))
    approvals.approve(_envelope(), TABULAR_LOGREG, name="logreg")
    approvals.check(_envelope(rounds=5), TABULAR_LOGREG)  # within the bounds
    changed = _envelope(holdout={"fraction": 0.1})
    with pytest.raises(Refused, match=f"envelope {envelope_hash(changed)[:12]}…"):
        approvals.check(changed, TABULAR_LOGREG, name="logreg", who={"task_id": 9})
    assert list(approvals.pending()) == [envelope_hash(changed)]
    bounded = approvals.decide(envelope_hash(changed), "approved", bounds={"max_rounds": 20})
    assert approvals.decisions()[bounded]["envelope"]["max_rounds"] == 20
    approvals.check(_envelope(holdout={"fraction": 0.1}, rounds=20), TABULAR_LOGREG)
    with pytest.raises(BadRequest, match="under the request"):
        approvals.decide(bounded, "approved", bounds={"max_rounds": 1})


def test_the_old_approval_by_plan_hash_alone_lets_nothing_run(tmp_path: object) -> None:
    import json
    from pathlib import Path

    folder = Path(str(tmp_path))
    (folder / "plans").mkdir()
    digest = plan_hash(TABULAR_LOGREG)
    old = {digest: {"decision": "approved", "name": "logreg", "at": "2024-01-01T00:00:00"}}
    (folder / "plans" / "approvals.json").write_text(json.dumps(old))
    with pytest.raises(Refused, match="is not approved"):
        PlanApprovals(folder).check(_envelope(), TABULAR_LOGREG)


def test_node_policy_requires_dp_secagg_min_nodes_and_bounds_epsilon() -> None:
    dp = {"clip": 1.0, "noise_multiplier": 1.0}
    assert "differential privacy" in str(
        policy_refusal(_envelope(), TrainingPolicy(require_dp=True))
    )
    assert "secure aggregation" in str(
        policy_refusal(_envelope(), TrainingPolicy(require_secagg=True))
    )
    assert "min_nodes >= 3" in str(policy_refusal(_envelope(), TrainingPolicy(min_nodes=3)))
    assert policy_refusal(_envelope(min_nodes=3), TrainingPolicy(min_nodes=3)) is None
    tight = TrainingPolicy(require_dp=True, max_epsilon_per_round=0.01)
    assert "ε per round" in str(policy_refusal(_envelope(dp=dp), tight))
    total = TrainingPolicy(require_dp=True, max_epsilon_per_round=100, max_epsilon_total=0.5)
    assert "ε over the rounds" in str(policy_refusal(_envelope(dp=dp), total))


def test_the_steward_sees_a_unified_diff_against_the_earlier_approved_version(
    tmp_path: object,
) -> None:
    from pathlib import Path

    approvals = PlanApprovals(Path(str(tmp_path)))
    approvals.approve(_envelope(), TABULAR_LOGREG, name="logreg")
    edited = TABULAR_LOGREG.replace("torch.sigmoid(", "torch.sigmoid(0.5 * ")
    request = _envelope(plan=plan_hash(edited))
    with pytest.raises(Refused):
        approvals.check(request, edited, name="logreg")
    view = approvals.request(envelope_hash(request)[:8])
    assert view["status"] == "pending" and view["earlier_plan"] == plan_hash(TABULAR_LOGREG)
    assert "-    return torch.sigmoid(model(x))" in view["diff"]
    assert "+    return torch.sigmoid(0.5 * model(x))" in view["diff"]
    assert view["diff"] == source_diff(
        TABULAR_LOGREG, edited, plan_hash(TABULAR_LOGREG), plan_hash(edited)
    )


def test_the_holdout_split_is_fixed_by_its_rule() -> None:
    train, held = split(np.arange(100) * 3, HoldoutRule(fraction=0.2, seed=4))
    assert len(held) == 20 and len(train) == 80 and not set(train) & set(held)
    again = split(np.arange(100) * 3, HoldoutRule(fraction=0.2, seed=4))
    assert (again[1] == held).all()


def test_node_metrics_equal_scikit_learn_on_breast_cancer() -> None:
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0)
    model = LogisticRegression(max_iter=50).fit(x_train[:, :3], y_train)  # imperfect on purpose
    p = model.predict_proba(x_test[:, :3])[:, 1]
    metrics = compute_metrics(check_predictions(p, len(p), "binary"), y_test, "binary", 5)
    assert metrics is not None
    assert metrics["loss"] == pytest.approx(log_loss(y_test, p), rel=1e-9)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_test, p >= 0.5))
    assert metrics["auc"] == pytest.approx(roc_auc_score(y_test, p), rel=1e-12)
    assert metrics["brier"] == pytest.approx(brier_score_loss(y_test, p), rel=1e-9)
    bins = (compute_metrics(p, y_test, "binary", 1) or {})["calibration"]
    assert sum(b[0] for b in bins) == len(p)
    in_bin = (p >= 0.3) & (p < 0.4)
    assert [in_bin.sum(), p[in_bin].mean(), y_test[in_bin].mean()] in [
        pytest.approx(b) for b in bins
    ]


def test_metrics_are_gated_so_held_out_rows_cannot_be_read_through_them() -> None:
    y = np.array([1.0] * 43 + [0.0] * 2)
    p = np.full(45, 0.6)
    # fewer held-out rows than the threshold: nothing at all
    assert compute_metrics(p[:4], y[:4], "binary", 5) is None
    gated = compute_metrics(p, y, "binary", 5)
    assert gated is not None and "auc" not in gated  # a class of 2 rows: no AUC
    # the 43-row attack: a plan cannot return rows, only one prediction per row
    with pytest.raises(BadRequest, match="one value per held-out row"):
        check_predictions(np.zeros((45, 31)), 45, "binary")
    # one patient made extreme: its term dominates the mean loss, which is withheld
    q = np.full(45, 0.99)
    q[-1] = 1e-12
    assert "loss" not in (compute_metrics(q, np.array([1.0] * 45), "binary", 5) or {})
    # a calibration bin of fewer than k rows withholds the whole table
    r = np.full(45, 0.75)
    r[:2] = 0.05
    assert "calibration" not in (compute_metrics(r, y, "binary", 5) or {})


def test_global_weights_equal_to_an_update_stay_fetchable_by_nodes(tmp_path: object) -> None:
    from pathlib import Path

    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from medfed.hub.db.models import Base
    from medfed.hub.services.learning import blobs
    from medfed.hub.services.learning.blob_files import FileBlobStore

    engine = create_engine(f"sqlite:///{Path(str(tmp_path)) / 'hub.db'}")
    Base.metadata.create_all(engine)
    store = FileBlobStore(Path(str(tmp_path)) / "blobs")
    data = b"one node, zero initial weights: the new model is the update"
    with Session(engine) as session:
        sha = store.write_bytes(data)
        blobs.register(session, sha256=sha, size=len(data), kind="update")
        with pytest.raises(Exception, match="is a update blob"):
            blobs.require_node_readable(session, store, sha)
        blobs.HubBlobAccess(store, session, task_id=None).write(data, kind="global")  # type: ignore[arg-type]
        blobs.require_node_readable(session, store, sha)  # now readable: no error
