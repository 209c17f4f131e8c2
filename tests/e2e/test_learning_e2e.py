"""Federated learning end to end: a hub and five hospitals as processes on 127.0.0.1.

The breast-cancer data is split over five nodes with Dirichlet(0.5) label skew; each
test starts ``fl.train`` trainings through the SDK against the same federation.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from medfed.algorithms.learning.examples import TABULAR_LOGREG, breast_cancer_shares
from medfed.algorithms.learning.holdout import HoldoutRule, split
from medfed.algorithms.learning.loop import TrainConfig, load_plan, train_local
from medfed.algorithms.learning.plan import plan_hash
from medfed.algorithms.learning.privacy import RoundPrivacy, epsilon
from medfed.common.resources import TaskPublic
from medfed.hub.db.models import LedgerEntry, Run
from medfed.hub.db.models_fl import Blob
from medfed.node.plans import PlanApprovals
from medfed.testing.federation import Federation
from medfed.testing.plans import approve_training

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
    }


def _start(fed: Federation, source: str, **params: Any) -> TaskPublic:
    """Approve the training's envelope at every node (as its steward would), then start it."""
    from medfed.sdk.learning import initial_weights

    learning = fed.researcher.learning
    weights = learning.upload_weights(initial_weights(source, params["plan_args"]))
    body = {k: v for k, v in params.items() if k != "datasets"}
    approve_training(
        [node.folder / "state" for node in fed.nodes.values()],
        source,
        dataset="cancer",
        params={**body, "initial_weights": weights},
        name="logreg",
    )
    return learning.start(source, weights=weights, **params)


@pytest.fixture(scope="module")
def fed(
    tmp_path_factory: pytest.TempPathFactory, data: tuple[list[pd.DataFrame], pd.DataFrame]
) -> Iterator[Federation]:
    shares = {f"site-{i}": {"cancer": share} for i, share in enumerate(data[0])}
    root = tmp_path_factory.mktemp("learning")
    with Federation(root, shares, hub_env=FAST, heartbeat_seconds=0.5) as federation:
        yield federation


def _predictions(
    plan: Any, weights: dict[str, torch.Tensor], test: pd.DataFrame, args: Any
) -> np.ndarray:
    model = plan.model(args)
    model.load_state_dict(weights)
    model.eval()
    with torch.no_grad():
        return plan.predict(model, test.drop(columns=["label"]), args).double().numpy()


def _fedavg_here(
    plan: Any,
    node_rows: list[tuple[pd.DataFrame, pd.DataFrame]],
    args: dict[str, Any],
    *,
    rounds: int,
    k: int,
) -> dict[str, torch.Tensor]:
    """FedAvg as medfed runs it, in this process: each node's :func:`train_local` on its
    training rows, updates weighted by the counts the nodes send (rounded to ``k``)."""
    weights = {key: v.detach().clone() for key, v in plan.model(args).state_dict().items()}
    for r in range(rounds):
        config = TrainConfig(
            epochs=TRAIN["local_epochs"],
            batch_size=TRAIN["batch_size"],
            lr=TRAIN["lr"],
            seed=TRAIN["seed"],
            round=r,
            device="cpu",
            args=args,
        )
        results = [train_local(plan, train, held, weights, config) for train, held in node_rows]
        counts = [float(round(x.n_train / k) * k) for x in results]
        total = sum(counts)
        weights = {
            key: value
            + sum(
                (n / total * x.update[key].double() for n, x in zip(counts, results, strict=True)),
                torch.zeros_like(value, dtype=torch.float64),
            ).float()
            for key, value in weights.items()
        }
    return weights


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
    task = _start(
        fed,
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
    trained = load_file(str(path))

    # the rows medfed trained on: at each node, its row ids (file positions 0..n-1) split
    # by the training's holdout rule — medfed's split, the default 20 % with seed 0
    node_rows = []
    for share in shares:
        train_ids, held_ids = split(np.arange(len(share)), HoldoutRule())
        node_rows.append((share.iloc[train_ids], share.iloc[held_ids].drop(columns=["label"])))

    # medfed's arithmetic redone in this process on exactly those rows: the model the five
    # sandboxed plan processes and the hub made is the same to float precision
    reference = _fedavg_here(plan, node_rows, plan_args, rounds=10, k=fed.min_cell_count)
    for key, value in reference.items():
        torch.testing.assert_close(trained[key], value, rtol=0, atol=1e-5)

    # the same model trained on the pooled training rows by a plain PyTorch loop (not
    # medfed's loop): 10 x 5 epochs, batch 16, SGD lr 0.2
    pooled = pd.concat([rows for rows, _ in node_rows], ignore_index=True)
    torch.manual_seed(0)
    model = plan.model(plan_args)
    train_set = plan.train_set(pooled, plan_args)
    loader = torch.utils.data.DataLoader(train_set, batch_size=16, shuffle=True)
    sgd = torch.optim.SGD(model.parameters(), lr=0.2)
    for _ in range(50):
        for batch in loader:
            sgd.zero_grad()
            plan.loss(model, batch).backward()
            sgd.step()
    federated = _predictions(plan, trained, test, plan_args)
    central = _predictions(plan, model.state_dict(), test, plan_args)
    labels = test["label"].to_numpy()
    assert abs(roc_auc_score(labels, federated) - roc_auc_score(labels, central)) <= 0.005
    # accuracy moves in steps of 1/171: FedAvg on these label-skewed nodes misclassifies
    # two test rows more than pooled training does (0.977 against 0.988)
    accuracy = [float(((p >= 0.5) == labels).mean()) for p in (federated, central)]
    assert abs(accuracy[0] - accuracy[1]) <= 2 / len(test) + 1e-9, accuracy

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
    # each node recorded the request for its steward, with who asked
    pending = PlanApprovals(fed.nodes["site-0"].folder / "state").pending()
    assert any(p["task_id"] == task.id and p["plan"] == plan_hash(source) for p in pending.values())


def test_an_approved_plan_with_a_changed_envelope_is_refused_before_a_line_runs(
    fed: Federation, plan_args: dict[str, Any]
) -> None:
    learning = fed.researcher.learning
    common = {"datasets": ["cancer"], "columns": COLUMNS, "plan_args": plan_args}
    approved = _finished(fed, _start(fed, TABULAR_LOGREG, rounds=1, **common, **TRAIN))
    assert approved.status.value == "completed", approved.error
    weights = _weights_sha(fed, plan_args)
    zero = learning.upload_weights(_zero_weights(plan_args))
    changes = [
        {"holdout": {"fraction": 0.25}},
        {"initial_weights": zero},
        {**TRAIN, "batch_size": 1},
        {"min_nodes": 1, "rounds": 1, "lr": 1.0},  # the one-patient gradient attack's
    ]
    for change in changes:
        chosen = change.pop("initial_weights", weights)
        settings = {**TRAIN, "rounds": 1, **change}
        task = learning.start(TABULAR_LOGREG, weights=chosen, **common, **settings)
        final = _finished(fed, task)
        assert final.status.value == "failed", change
        assert "training envelope" in (final.error or "") and "not approved" in (final.error or "")
        runs_under = PlanApprovals(fed.nodes["site-0"].folder / "state").history()
        assert not [r for r in runs_under if r["task_id"] == task.id]  # no plan code ran


def _zero_weights(plan_args: dict[str, Any]) -> bytes:
    from safetensors.torch import load, save

    from medfed.sdk.learning import initial_weights

    state = load(initial_weights(TABULAR_LOGREG, plan_args))
    return save({k: torch.zeros_like(v) for k, v in state.items()})


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
    assert f"(plan {plan_hash(edited)[:12]}…) is not approved" in (final.error or "")


def _cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from medfed.cli.main import app

    return CliRunner().invoke(app, ["node", "plans", *args])


def test_the_steward_reviews_approves_and_rejects_training_requests_with_the_cli(
    fed: Federation, plan_args: dict[str, Any]
) -> None:
    learning = fed.researcher.learning
    settings = {"columns": COLUMNS, "plan_args": plan_args, "rounds": 1, **TRAIN}
    folders = {name: node.folder / "state" for name, node in fed.nodes.items()}
    configs = {name: str(node.config_path) for name, node in fed.nodes.items()}
    # the plan's first version was approved earlier (under another envelope) at site-0
    approve_training(
        [folders["site-0"]],
        TABULAR_LOGREG,
        dataset="cancer",
        params={**settings, "initial_weights": "e" * 64},
        name="logreg",
    )
    source = TABULAR_LOGREG + "\n# version 2\n"
    learning.submit_plan(source, name="logreg")
    weights = _weights_sha(fed, plan_args)
    refused = _finished(
        fed, learning.start(source, datasets=["cancer"], weights=weights, **settings)
    )
    assert refused.status.value == "failed" and "not approved" in (refused.error or "")
    requests = PlanApprovals(folders["site-0"]).pending()
    digest = next(h for h, r in requests.items() if r["task_id"] == refused.id)

    pending = _cli("pending", "--config", configs["site-0"])
    assert pending.exit_code == 0, pending.output
    assert digest[:16] in pending.output and "logreg" in pending.output

    shown = _cli("show", digest[:12], "--config", configs["site-0"])
    assert shown.exit_code == 0, shown.output
    assert f"envelope {digest} — pending" in shown.output
    assert f"task_id: {refused.id}" in shown.output and "dataset: cancer" in shown.output
    assert f'"plan": "{plan_hash(source)}"' in shown.output  # the envelope
    assert f"changes against plan {plan_hash(TABULAR_LOGREG)[:12]}" in shown.output
    assert "+# version 2" in shown.output  # the diff against the approved version

    unreasoned = _cli("reject", digest, "--config", configs["site-0"])
    assert unreasoned.exit_code != 0 and "--reason" in unreasoned.output
    assert digest in PlanApprovals(folders["site-0"]).pending()  # nothing was decided

    for name in fed.nodes:
        approved = _cli("approve", digest, "--reason", "reviewed v2", "--config", configs[name])
        assert approved.exit_code == 0 and f"envelope {digest} approved" in approved.output
    ran = _finished(fed, learning.start(source, datasets=["cancer"], weights=weights, **settings))
    assert ran.status.value == "completed", ran.error

    listed = _cli("list", "--config", configs["site-0"])
    assert listed.exit_code == 0 and digest[:16] in listed.output
    assert "reviewed" in listed.output  # the reason (a narrow terminal wraps it)
    decision = PlanApprovals(folders["site-0"]).decisions()[digest]
    assert (decision["decision"], decision["reason"]) == ("approved", "reviewed v2")
    history = _cli("history", digest[:12], "--config", configs["site-0"])
    assert history.exit_code == 0 and str(ran.id) in history.output
    runs = PlanApprovals(folders["site-0"]).history(digest)
    assert {r["task_id"] for r in runs} == {ran.id}
    assert {r["phase"] for r in runs} == {"train", "evaluate"}

    # another envelope (a larger learning rate): the steward rejects it, with a reason
    faster = {**settings, "lr": 0.5}
    asked = _finished(fed, learning.start(source, datasets=["cancer"], weights=weights, **faster))
    other = next(
        h for h, r in PlanApprovals(folders["site-0"]).pending().items() if r["task_id"] == asked.id
    )
    rejected = _cli("reject", other, "--reason", "lr too large", "--config", configs["site-0"])
    assert rejected.exit_code == 0 and f"envelope {other} rejected" in rejected.output
    again = _finished(fed, learning.start(source, datasets=["cancer"], weights=weights, **faster))
    assert again.status.value == "failed"
    assert f"training envelope {other[:12]}… was rejected" in (again.error or "")


PAUSABLE = (
    TABULAR_LOGREG
    + """

_train_set = train_set


def train_set(frame, args):  # held while the test leaves "pause" in the sandbox's scratch
    import os
    import time

    while os.path.exists("pause"):
        time.sleep(0.05)
    return _train_set(frame, args)
"""
)


def _flag(fed: Federation, names: Iterable[str], flag: str) -> list[Path]:
    """Leave the file ``flag`` in the scratch folder of each named node's plan process.

    A plan in the sandbox sees nothing of its node but that folder (its working
    directory), so the test plans wait on a file there. Returns the files left.
    """
    files = []
    for name in names:
        homes = sorted((fed.nodes[name].folder / "state" / "jobs").glob("medfed-plan-*"))
        assert homes, f"{name} has started no plan process yet"
        for home in homes:
            (home / flag).touch()
            files.append(home / flag)
    return files


def _unflag(files: Iterable[Path]) -> None:
    for path in files:
        path.unlink(missing_ok=True)


def test_rounds_proceed_at_quorum_and_a_dropped_node_rejoins_later_rounds(
    fed: Federation, plan_args: dict[str, Any]
) -> None:
    learning = fed.researcher.learning
    task = _start(
        fed,
        PAUSABLE,
        datasets=["cancer"],
        columns=COLUMNS,
        plan_args=plan_args,
        rounds=6,
        quorum=0.8,
        **TRAIN,
    )
    _wait(lambda: learning.progress(task.id).train_round >= 1)
    node = fed.nodes["site-2"]
    node.kill()

    def site_2() -> list[Any]:
        return [r for r in fed.admin.tasks.runs(task.id) if r.node_name == "site-2"]

    # the rounds go on at quorum without it: its run is closed
    _wait(lambda: any(r.status.value == "failed" for r in site_2()))
    others = [name for name in fed.nodes if name != "site-2"]
    paused = _flag(fed, others, "pause")  # hold the others inside their next round
    try:
        closed_in = min(r.round for r in site_2() if r.status.value == "failed")
        node.start()
        _wait(lambda: any(r.round > closed_in and r.attempts >= 1 for r in site_2()))
    finally:
        _unflag(paused)
    final = _finished(fed, task)
    assert final.status.value == "completed", final.error
    every_run = fed.admin.tasks.runs(final.id)  # later rounds: the administrator's view
    closed = [r for r in every_run if r.node_name == "site-2" and r.status.value == "failed"]
    assert all("round closed: quorum reached" in (r.error or "") for r in closed)
    history = learning.result(final).history
    assert [r.round for r in history] == list(range(6))
    assert min(r.updates for r in history) >= 4


def test_the_hub_killed_mid_training_resumes_from_its_last_checkpoint(
    fed: Federation, plan_args: dict[str, Any]
) -> None:
    learning = fed.researcher.learning
    task = _start(
        fed,
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

_train_set = train_set


def train_set(frame, args):  # held while the test leaves "hold" in the sandbox's scratch
    import os
    import time

    while os.path.exists("hold"):
        time.sleep(0.05)
    return _train_set(frame, args)
"""
)


def _stop_after_masking(fed: Federation, task_id: int, name: str, held: list[Path]) -> None:
    """SIGSTOP ``name`` once its masked input arrived, then let the held nodes train.

    The others wait inside their training while their ``held`` files exist, so the
    stopped node's answer is never the round's last one, however loaded the machine is.
    """
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        progress = fed.researcher.learning.progress(task_id)
        if progress.phase == "masked":
            masked_round = progress.timings[-1].round
            runs = fed.admin.tasks.runs(task_id)
            if any(
                r.round == masked_round and r.node_name == name and r.status.value == "done"
                for r in runs
            ):
                process = fed.nodes[name].process
                assert process is not None
                os.kill(process.pid, signal.SIGSTOP)
                _unflag(held)
                return
        time.sleep(0.05)
    _unflag(held)  # release the held nodes, so later tests do not wait behind them
    raise AssertionError("no masked input seen")


def test_secure_aggregation_equals_the_plain_sum_and_survives_a_dropout_after_masking(
    fed: Federation,
    plan_args: dict[str, Any],
    tmp_path: Path,
) -> None:
    learning = fed.researcher.learning
    common = {"columns": COLUMNS, "plan_args": plan_args, "rounds": 1, **TRAIN}
    plain = _finished(fed, _start(fed, TABULAR_LOGREG, datasets=["cancer"], **common))
    assert plain.status.value == "completed", plain.error
    stopped = "site-0"  # trains at once; the others wait while their "hold" file exists
    held = _flag(fed, [name for name in fed.nodes if name != stopped], "hold")
    try:
        task = _start(
            fed,
            HOLD_OTHERS,
            datasets=["cancer"],
            secagg={"threshold": 0.6},
            round_timeout_s=20,
            **common,
        )
    except BaseException:
        _unflag(held)
        raise
    _stop_after_masking(fed, task.id, stopped, held)
    try:
        final = _finished(fed, task)
    finally:
        process = fed.nodes[stopped].process
        assert process is not None
        os.kill(process.pid, signal.SIGCONT)
    assert final.status.value == "completed", final.error
    every_run = fed.admin.tasks.runs(final.id)
    unmask_round = max(r.round for r in every_run if r.round < max(x.round for x in every_run))
    dropped = [r for r in every_run if r.round == unmask_round and r.node_name == stopped]
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
    plain = _finished(fed, _start(fed, TABULAR_LOGREG, datasets=["cancer"], **common))
    secure = _finished(
        fed,
        _start(fed, TABULAR_LOGREG, datasets=["cancer"], secagg={"threshold": 0.6}, **common),
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
    task = _start(
        fed,
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
