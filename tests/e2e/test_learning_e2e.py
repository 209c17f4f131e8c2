"""Federated learning end to end: a hub and five hospitals as processes on 127.0.0.1.

The breast-cancer data is split over five nodes with Dirichlet(0.5) label skew; each
test starts ``fl.train`` trainings through the SDK against the same federation.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from medfed.algorithms.learning.examples import TABULAR_LOGREG, breast_cancer_shares
from medfed.algorithms.learning.loop import load_plan
from medfed.algorithms.learning.plan import plan_hash
from medfed.algorithms.learning.privacy import RoundPrivacy, epsilon
from medfed.common.resources import TaskPublic
from medfed.hub.db.models import LedgerEntry, Run
from medfed.hub.db.models_fl import Blob
from medfed.node.plans import PlanApprovals
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e

FEATURES = [f"f{i}" for i in range(30)]
COLUMNS = [*FEATURES, "label"]
FAST = {"MEDFED_LEASE_SECONDS": "10", "MEDFED_SWEEP_SECONDS": "0.2"}
TRAIN = {"local_epochs": 5, "batch_size": 16, "lr": 0.2, "seed": 0, "device": "auto"}


@pytest.fixture(scope="module")
def data() -> tuple[list[pd.DataFrame], pd.DataFrame]:
    return breast_cancer_shares(5, alpha=0.5, seed=0)


@pytest.fixture(scope="module")
def plan_args(data: tuple[list[pd.DataFrame], pd.DataFrame]) -> dict[str, Any]:
    pooled = pd.concat(data[0])
    return {
        "features": 30,
        "mean": pooled[FEATURES].mean().tolist(),
        "scale": pooled[FEATURES].std(ddof=0).tolist(),
        "holdout": 0.2,
    }


def _approve(fed: Federation, source: str) -> str:
    for node in fed.nodes.values():
        PlanApprovals(node.folder / "state").decide(source, "approved", name="logreg")
    return plan_hash(source)


@pytest.fixture(scope="module")
def fed(
    tmp_path_factory: pytest.TempPathFactory, data: tuple[list[pd.DataFrame], pd.DataFrame]
) -> Iterator[Federation]:
    shares = {f"site-{i}": {"cancer": share} for i, share in enumerate(data[0])}
    root = tmp_path_factory.mktemp("learning")
    with Federation(root, shares, hub_env=FAST, heartbeat_seconds=0.5) as federation:
        _approve(federation, TABULAR_LOGREG)
        yield federation


def _accuracy(plan: Any, weights: dict[str, torch.Tensor], test: pd.DataFrame, args: Any) -> float:
    model = plan.model(args)
    model.load_state_dict(weights)
    x, y = plan.tensors(test, args)
    with torch.no_grad():
        return float(((model(x) > 0).float() == y).float().mean())


def _wait(predicate: Callable[[], bool], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _hub_db(fed: Federation) -> Session:
    return Session(create_engine(f"sqlite:///{fed.hub.data_dir / 'hub.db'}"))


def _finished(fed: Federation, task: TaskPublic, timeout: float = 300.0) -> TaskPublic:
    return fed.researcher.tasks.wait(task.id, timeout=timeout, progress=False)


def test_fedavg_on_label_skewed_nodes_matches_pooled_training(
    fed: Federation,
    data: tuple[list[pd.DataFrame], pd.DataFrame],
    plan_args: dict[str, Any],
    tmp_path: Path,
) -> None:
    shares, test = data
    learning = fed.researcher.learning
    task = learning.start(
        TABULAR_LOGREG,
        datasets=["cancer"],
        columns=COLUMNS,
        plan_args=plan_args,
        rounds=10,
        name="cancer-logreg",
        **TRAIN,
    )
    final = _finished(fed, task)
    assert final.status.value == "completed", final.error
    result = learning.result(final)
    assert result.rounds == 10 and len(result.history) == 10
    assert [r.updates for r in result.history] == [5] * 10
    assert result.metrics["accuracy"] > 0.9  # the global model on the nodes' held-out rows

    models = learning.models()
    assert [(m.name, m.version, m.task_id) for m in models] == [("cancer-logreg", 1, task.id)]
    path = learning.download(models[0].id, tmp_path / "model.safetensors")
    plan_file = tmp_path / "plan.py"
    plan_file.write_text(TABULAR_LOGREG)
    plan = load_plan(plan_file)
    federated = _accuracy(plan, load_file(str(path)), test, plan_args)

    # the same model trained on the pooled rows by a plain PyTorch loop (not medfed's
    # loop): 10 x 5 epochs, batch 16, SGD lr 0.2, the plan's 20 % held out
    pooled = pd.concat(shares, ignore_index=True)
    torch.manual_seed(0)
    model = plan.model(plan_args)
    train_set, _ = plan.datasets(pooled, plan_args)
    loader = torch.utils.data.DataLoader(train_set, batch_size=16, shuffle=True)
    sgd = torch.optim.SGD(model.parameters(), lr=0.2)
    for _ in range(50):
        for batch in loader:
            sgd.zero_grad()
            plan.loss(model, batch).backward()
            sgd.step()
    central = _accuracy(plan, model.state_dict(), test, plan_args)
    assert abs(federated - central) <= 0.01, (federated, central)

    progress = learning.progress(task.id)
    train_rounds = [t for t in progress.timings if t.phase == "train"]
    assert len(train_rounds) == 10 and all(t.seconds is not None for t in train_rounds)
    with _hub_db(fed) as db:
        actions = [e.body for e in db.scalars(select(LedgerEntry))]
    assert any('"model.store"' in b for b in actions)
    assert any('"model.download"' in b for b in actions)


def _weights_sha(fed: Federation, plan_args: dict[str, Any]) -> str:
    from medfed.sdk.learning import initial_weights

    return fed.researcher.learning.upload_weights(initial_weights(TABULAR_LOGREG, plan_args))


def test_an_unapproved_plan_is_refused_before_its_first_line_runs(
    fed: Federation, plan_args: dict[str, Any], tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    source = f"open({str(marker)!r}, 'w').write('ran')\n" + TABULAR_LOGREG
    task = fed.researcher.learning.start(
        source,
        datasets=["cancer"],
        columns=COLUMNS,
        plan_args=plan_args,
        weights=_weights_sha(fed, plan_args),
        rounds=2,
    )
    final = _finished(fed, task)
    assert final.status.value == "failed"
    assert "is not approved at this node" in (final.error or "")
    assert {r.status.value for r in final.runs} == {"refused"}
    assert not marker.exists()


def test_a_plan_approved_then_edited_is_refused(fed: Federation, plan_args: dict[str, Any]) -> None:
    edited = TABULAR_LOGREG + "\nEDITED = True\n"
    assert plan_hash(edited) != plan_hash(TABULAR_LOGREG)
    task = fed.researcher.learning.start(
        edited,
        datasets=["cancer"],
        columns=COLUMNS,
        plan_args=plan_args,
        weights=_weights_sha(fed, plan_args),
        rounds=2,
    )
    final = _finished(fed, task)
    assert final.status.value == "failed"
    assert f"plan {plan_hash(edited)[:12]}… is not approved" in (final.error or "")


def test_the_steward_lists_shows_and_approves_plans_with_the_cli(fed: Federation) -> None:
    from typer.testing import CliRunner

    from medfed.cli.main import app

    source = TABULAR_LOGREG + "\n# version 2\n"
    digest = fed.researcher.learning.submit_plan(source, name="logreg-v2").hash
    config = str(fed.nodes["site-0"].config_path)
    runner = CliRunner()
    shown = runner.invoke(app, ["node", "plans", "show", digest, "--config", config])
    assert shown.exit_code == 0, shown.output
    assert "version 2" in shown.output
    approved = runner.invoke(app, ["node", "plans", "approve", digest, "--config", config])
    assert approved.exit_code == 0 and f"plan {digest} approved" in approved.output
    listed = runner.invoke(app, ["node", "plans", "list", "--config", config])
    assert listed.exit_code == 0
    assert digest[:8] in listed.output
    decisions = PlanApprovals(fed.nodes["site-0"].folder / "state").decisions()
    assert decisions[digest]["decision"] == "approved"


PAUSABLE = (
    TABULAR_LOGREG
    + """

_datasets = datasets


def datasets(frame, args):  # the test holds the nodes here while a pause file exists
    import os
    import time

    while os.path.exists(args["pause"]):
        time.sleep(0.05)
    return _datasets(frame, args)
"""
)


def test_rounds_proceed_at_quorum_and_a_dropped_node_rejoins_later_rounds(
    fed: Federation, plan_args: dict[str, Any], tmp_path: Path
) -> None:
    _approve(fed, PAUSABLE)
    pause = tmp_path / "pause"
    learning = fed.researcher.learning
    task = learning.start(
        PAUSABLE,
        datasets=["cancer"],
        columns=COLUMNS,
        plan_args={**plan_args, "pause": str(pause)},
        rounds=6,
        quorum=0.8,
        **TRAIN,
    )
    _wait(lambda: learning.progress(task.id).train_round >= 1)
    node = fed.nodes["site-2"]
    node.kill()

    def site_2() -> list[Any]:
        return [r for r in fed.researcher.tasks.get(task.id).runs if r.node_name == "site-2"]

    # the rounds go on at quorum without it: its run is closed
    _wait(lambda: any(r.status.value == "failed" for r in site_2()))
    pause.touch()  # hold the others inside their next round
    closed_in = min(r.round for r in site_2() if r.status.value == "failed")
    node.start()
    _wait(lambda: any(r.round > closed_in and r.attempts >= 1 for r in site_2()))
    pause.unlink()
    final = _finished(fed, task)
    assert final.status.value == "completed", final.error
    closed = [r for r in final.runs if r.node_name == "site-2" and r.status.value == "failed"]
    assert all("round closed: quorum reached" in (r.error or "") for r in closed)
    history = learning.result(final).history
    assert [r.round for r in history] == list(range(6))
    assert min(r.updates for r in history) >= 4


def test_the_hub_killed_mid_training_resumes_from_its_last_checkpoint(
    fed: Federation, plan_args: dict[str, Any]
) -> None:
    learning = fed.researcher.learning
    task = learning.start(
        TABULAR_LOGREG,
        datasets=["cancer"],
        columns=COLUMNS,
        plan_args=plan_args,
        rounds=8,
        **TRAIN,
    )
    _wait(lambda: learning.progress(task.id).train_round >= 3)
    before = learning.progress(task.id).train_round
    fed.hub.kill()
    fed.hub.start()
    after = learning.progress(task.id)
    assert after.train_round >= before  # the state came back from the database
    final = _finished(fed, task)
    assert final.status.value == "completed", final.error
    result = learning.result(final)
    assert [r.round for r in result.history] == list(range(8))
    phases = [t.phase for t in learning.progress(task.id).timings]
    assert phases == ["prepare", *["train"] * 8, "evaluate"]  # no round started over


HOLD_OTHERS = (
    TABULAR_LOGREG
    + """

_datasets = datasets


def datasets(frame, args):  # while the hold file exists, only the free node trains
    import os
    import time

    while len(frame) != args["free_rows"] and os.path.exists(args["hold"]):
        time.sleep(0.05)
    return _datasets(frame, args)
"""
)


def _stop_after_masking(fed: Federation, task_id: int, name: str, hold: Path) -> None:
    """SIGSTOP ``name`` once its masked input arrived, then let the held nodes train.

    The others wait inside their training while ``hold`` exists, so the stopped node's
    answer is never the round's last one, however loaded the machine is.
    """
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        progress = fed.researcher.learning.progress(task_id)
        if progress.phase == "masked":
            masked_round = progress.timings[-1].round
            runs = fed.researcher.tasks.get(task_id).runs
            if any(
                r.round == masked_round and r.node_name == name and r.status.value == "done"
                for r in runs
            ):
                process = fed.nodes[name].process
                assert process is not None
                os.kill(process.pid, signal.SIGSTOP)
                hold.unlink()
                return
        time.sleep(0.05)
    hold.unlink()  # release the held nodes, so later tests do not wait behind them
    raise AssertionError("no masked input seen")


def test_secure_aggregation_equals_the_plain_sum_and_survives_a_dropout_after_masking(
    fed: Federation,
    plan_args: dict[str, Any],
    data: tuple[list[pd.DataFrame], pd.DataFrame],
    tmp_path: Path,
) -> None:
    learning = fed.researcher.learning
    common = {"columns": COLUMNS, "plan_args": plan_args, "rounds": 1, **TRAIN}
    plain = _finished(fed, learning.start(TABULAR_LOGREG, datasets=["cancer"], **common))
    assert plain.status.value == "completed", plain.error
    _approve(fed, HOLD_OTHERS)
    hold = tmp_path / "hold"
    hold.touch()
    stopped = "site-0"
    held_args = {**plan_args, "hold": str(hold), "free_rows": len(data[0][0])}
    task = learning.start(
        HOLD_OTHERS,
        datasets=["cancer"],
        secagg={"threshold": 0.6},
        round_timeout_s=20,
        **{**common, "plan_args": held_args},
    )
    _stop_after_masking(fed, task.id, stopped, hold)
    try:
        final = _finished(fed, task)
    finally:
        process = fed.nodes[stopped].process
        assert process is not None
        os.kill(process.pid, signal.SIGCONT)
    assert final.status.value == "completed", final.error
    unmask_round = max(r.round for r in final.runs if r.round < max(x.round for x in final.runs))
    dropped = [r for r in final.runs if r.round == unmask_round and r.node_name == stopped]
    assert dropped and dropped[0].status.value == "failed"
    assert "round closed: timeout" in (dropped[0].error or "")

    secure = learning.result(final)
    assert secure.secure_aggregation and secure.history[0].updates == 5  # the dropped one too
    ours = np.concatenate([v.numpy().ravel() for v in _model(fed, final.id, tmp_path).values()])
    theirs = np.concatenate([v.numpy().ravel() for v in _model(fed, plain.id, tmp_path).values()])
    np.testing.assert_allclose(ours, theirs, atol=1e-5)

    with _hub_db(fed) as db:  # the hub holds masked inputs only, never one node's update
        kinds = set(db.scalars(select(Blob.kind).where(Blob.task_id == final.id)))
        outputs = [r.output or {} for r in db.scalars(select(Run).where(Run.task_id == final.id))]
    assert kinds <= {"masked", "global", "optimizer"} and "masked" in kinds
    assert not any("update" in o for o in outputs)


def test_secure_rounds_share_next_keys_early_and_equal_plain_training(
    fed: Federation, plan_args: dict[str, Any], tmp_path: Path
) -> None:
    learning = fed.researcher.learning
    common = {"columns": COLUMNS, "plan_args": plan_args, "rounds": 3, **TRAIN}
    plain = _finished(fed, learning.start(TABULAR_LOGREG, datasets=["cancer"], **common))
    secure = _finished(
        fed,
        learning.start(TABULAR_LOGREG, datasets=["cancer"], secagg={"threshold": 0.6}, **common),
    )
    assert plain.status.value == "completed", plain.error
    assert secure.status.value == "completed", secure.error
    phases = [t.phase for t in learning.progress(secure.id).timings]
    # keys for rounds 2 and 3 travelled with the previous round's masked and unmask answers
    assert phases == [
        "prepare",
        *["advertise", "share", "masked", "unmask"],
        *["masked", "unmask"] * 2,
        "evaluate",
    ]
    ours = np.concatenate([v.numpy().ravel() for v in _model(fed, secure.id, tmp_path).values()])
    theirs = np.concatenate([v.numpy().ravel() for v in _model(fed, plain.id, tmp_path).values()])
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def _model(fed: Federation, task_id: int, folder: Path) -> dict[str, torch.Tensor]:
    model = next(m for m in fed.researcher.learning.models() if m.task_id == task_id)
    return load_file(str(fed.researcher.learning.download(model.id, folder / f"{task_id}.st")))


def test_the_privacy_budget_refuses_the_round_that_would_exceed_it(
    fed: Federation, plan_args: dict[str, Any]
) -> None:
    step = RoundPrivacy(noise_multiplier=1.0, sample_rate=1.0)
    two, three = epsilon([step] * 2, 1e-5), epsilon([step] * 3, 1e-5)
    fed.admin.learning.set_privacy_budget((two + three) / 2, 1e-5, project=fed.project_id)
    learning = fed.researcher.learning
    task = learning.start(
        TABULAR_LOGREG,
        datasets=["cancer"],
        columns=COLUMNS,
        plan_args=plan_args,
        rounds=5,
        dp={"clip": 1.0, "noise_multiplier": 1.0, "delta": 1e-5},
        **TRAIN,
    )
    final = _finished(fed, task)
    assert final.status.value == "completed", final.error
    result = learning.result(final)
    assert result.rounds == 2
    assert result.stopped is not None and "privacy budget: round 3" in result.stopped
    assert result.privacy is not None and result.privacy["epsilon"] == pytest.approx(two)
