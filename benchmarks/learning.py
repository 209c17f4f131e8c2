"""Federated learning (issue 7): medfed against Flower's deployment mode, side by side.

Run it as ``.venv/bin/python -m benchmarks.learning`` (5 to 11 minutes on 2 cores, most of
it Flower's rounds). Options: ``--rounds 10``, ``--epochs 5``, ``--batch-size 16``, ``--lr
0.2`` (the e2e test's settings), ``--hidden 0`` (0 = logistic regression), ``--big-hidden
31250`` (the ~1M-parameter MLP of the secure-aggregation comparison), ``--big-rounds 5``,
``--skip flower|secagg|big|medfed`` (repeatable), ``--quick`` (3 rounds, no 1M variant).
How it runs, one step after another, nothing in parallel with anything else:

1. **Data** — :func:`medfed.algorithms.learning.examples.breast_cancer_shares`: sklearn's
   breast-cancer table, 30 % common test set, the rest split over 5 clients with
   Dirichlet(alpha = 0.5) label skew (fixed seed). Features are standardized with the mean and
   scale of the union of the clients' rows (passed to the plan as ``args``; the same
   numbers for every contender). Model and data preparation come from ONE plan source,
   :data:`~medfed.algorithms.learning.examples.TABULAR_LOGREG`; the held-out rows of each
   client are medfed's (:func:`~medfed.algorithms.learning.holdout.split` with the
   training's default rule, 20 %, seed 0), the same rows for every contender.
2. **Pooled** — medfed's local loop (:func:`~medfed.algorithms.learning.loop.train_local`)
   on the union of the clients' training rows, ``rounds`` calls of ``epochs`` epochs (as
   the e2e test): the accuracy to match.
3. **medfed** — a :class:`~medfed.testing.federation.Federation` (hub on SQLite and one node
   process per client on 127.0.0.1), the training's envelope approved at every node
   (:func:`medfed.testing.plans.approve_training`), ``fl.train`` started
   through the SDK (FedAvg, the same epochs, batch size, lr and seed) and waited for; then
   the same with secure aggregation. Per-round wall time comes from the hub's round
   records (the rounds' start and end timestamps), local training time from what each
   node reports per round (the slowest node counts); orchestration overhead per round =
   round wall time - the slowest node's training (as its plan process timed it). Final
   accuracy: the global model the SDK downloads, on the common test set, in this process.
4. **1M parameters** — the same federation runs the MLP padded to ~1M parameters
   (``--big-hidden``) for ``--big-rounds`` rounds without and with secure aggregation
   (64-bit default and 32-bit): the secure-aggregation overhead ratio of the target.
5. **Flower** — ``flwr`` (pinned, :data:`FLWR`) in its own venv under
   ``benchmarks/.peers/flwr`` (made once, reused; torch 2.13.0 CPU installed first). The
   benchmark writes a Flower app (FAB project: ``pyproject.toml`` with ``[tool.flwr.app]``,
   a ServerApp with FedAvg and a ClientApp) into a temporary folder; the ClientApp runs the
   same plan source with a copy of medfed's loop (same seeding: ``torch.manual_seed(seed ·
   1000003 + round)``, shuffling generator ``seed · 7919 + round``, plain SGD, held-out
   predictions before and after training) on its CSV's training rows (the CSV marks
   medfed's held-out rows in a column ``heldout``), so both sides do the same arithmetic. It starts
   ``flower-superlink --insecure`` and 5 ``flower-supernode --insecure`` (each with its
   client's CSV in ``--node-config``) on 127.0.0.1 and runs the app with ``flwr run``
   against a Flower Configuration (``FLWR_HOME``) that names that SuperLink. The ServerApp
   logs, per round, the time its ``evaluate_fn`` (test accuracy of the global model) is
   called — before round 1 and after each round — and the training seconds each
   ClientApp reports; a round's wall time is the gap between consecutive calls, minus the
   evaluation itself.

It prints a table and writes ``benchmarks/results/learning.json``. Every process is stopped
on the way out, every wait has a timeout, everything listens on 127.0.0.1; pip reaching
PyPI (once, for the Flower venv) is the only network use. A failed step keeps its
temporary folder and prints the log tails.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.dispatch import console, machine

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "learning.json"
PEERS_DIR = HERE / ".peers"
FLWR = "flwr==1.41.0"  # 1.42.0 needs a certifi newer than the index here has
TORCH = "torch==2.13.0"
INSTALL_TIMEOUT_S = 900
SEED = 7
NODES = 5
ALPHA = 0.5
TARGET_OVERHEAD_S = 0.5
TARGET_SECAGG_RATIO = 1.5


# --- data and the plan -------------------------------------------------------------------


def load_data(seed: int = SEED) -> tuple[list[pd.DataFrame], pd.DataFrame, dict[str, Any]]:
    """The 5 label-skewed shares, the common test frame and the plan's standardization."""
    from medfed.algorithms.learning.examples import breast_cancer_shares

    shares, test = breast_cancer_shares(NODES, alpha=ALPHA, seed=seed)
    pooled = pd.concat(shares, ignore_index=True)
    features = [c for c in pooled.columns if c != "label"]
    x = pooled[features].to_numpy(dtype=float)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    args = {
        "features": len(features),
        "mean": [round(float(v), 10) for v in x.mean(axis=0)],
        "scale": [round(float(v), 10) for v in scale],
    }
    return shares, test, args


def plan_source() -> str:
    from medfed.algorithms.learning.examples import TABULAR_LOGREG

    return TABULAR_LOGREG


def parameter_count(args: dict[str, Any]) -> int:
    n, hidden = int(args["features"]), int(args.get("hidden", 0))
    return n * hidden + 2 * hidden + 1 if hidden else n + 1


def test_accuracy(weights: dict[str, Any], test: pd.DataFrame, args: dict[str, Any]) -> float:
    """Accuracy of ``weights`` (tensors or arrays) on the common test frame, in this process."""
    import torch

    plan = _load_plan_here()
    model = plan.model(args)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
    model.eval()
    with torch.no_grad():
        p = plan.predict(model, test.drop(columns=["label"]), args).numpy()
    return float(((p >= 0.5) == (test["label"].to_numpy() == 1)).mean())


def holdout_split(share: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """medfed's split of one client's rows (the training's default holdout rule)."""
    import numpy as np

    from medfed.algorithms.learning.holdout import HoldoutRule, split

    train_ids, held_ids = split(np.arange(len(share)), HoldoutRule())
    return share.iloc[train_ids], share.iloc[held_ids]


_PLAN_MODULE: Any = None


def _load_plan_here() -> Any:
    global _PLAN_MODULE
    if _PLAN_MODULE is None:
        from medfed.algorithms.learning.loop import load_plan

        folder = Path(tempfile.mkdtemp(prefix="medfed-plan-"))
        path = folder / "plan.py"
        path.write_text(plan_source())
        _PLAN_MODULE = load_plan(path)
        shutil.rmtree(folder, ignore_errors=True)
    return _PLAN_MODULE


def pooled_baseline(
    shares: list[pd.DataFrame], test: pd.DataFrame, args: dict[str, Any], opts: argparse.Namespace
) -> dict[str, Any]:
    """medfed's loop on the clients' pooled training rows: ``rounds`` calls of ``epochs``."""
    from medfed.algorithms.learning.loop import TrainConfig, train_local

    plan = _load_plan_here()
    weights = {k: v.detach().clone() for k, v in plan.model(args).state_dict().items()}
    parts = [holdout_split(share) for share in shares]
    pooled = pd.concat([train for train, _ in parts], ignore_index=True)
    held = pd.concat([h for _, h in parts], ignore_index=True).drop(columns=["label"])
    seconds = 0.0
    for r in range(opts.rounds):
        config = TrainConfig(
            epochs=opts.epochs,
            batch_size=opts.batch_size,
            lr=opts.lr,
            seed=SEED,
            round=r,
            device="cpu",
            args=args,
        )
        result = train_local(plan, pooled, held, weights, config)
        weights = {k: weights[k] + result.update[k] for k in weights}
        seconds += result.seconds
    return {
        "epochs": opts.rounds * opts.epochs,
        "seconds": round(seconds, 3),
        "test_accuracy": round(test_accuracy(weights, test, args), 4),
    }


# --- helpers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A temporary folder, removed on success and kept (with its logs) when a step fails."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    except BaseException:
        console.print(f"[red]failed[/red]; logs kept in {root}")
        for log in sorted([*root.glob("*.log"), *root.glob("*/*.log")]):
            tail = log.read_text(errors="replace").splitlines()[-8:]
            console.print(f"--- {log.relative_to(root)}", *tail, sep="\n", markup=False)
        raise
    shutil.rmtree(root, ignore_errors=True)


def summarise_rounds(rounds: list[dict[str, float]]) -> dict[str, Any]:
    """Median / mean / all of each round's wall time, local time and overhead, seconds."""
    out: dict[str, Any] = {"rounds": len(rounds)}
    for key in ("wall_s", "local_s", "overhead_s"):
        values = [r[key] for r in rounds if r.get(key) is not None]
        if values:
            out[key] = {
                "median": round(statistics.median(values), 3),
                "mean": round(statistics.fmean(values), 3),
                "all": [round(v, 3) for v in values],
            }
    return out


# --- Flower ---------------------------------------------------------------------------------

_FLOWER_PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "medfedbench"
version = "1.0.0"
description = "medfed's learning benchmark as a Flower app"
license = "Apache-2.0"
dependencies = ["flwr>=1.41", "torch", "pandas"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "medfed"

[tool.flwr.app.components]
serverapp = "benchapp.server_app:app"
clientapp = "benchapp.client_app:app"

[tool.flwr.app.config]
num-server-rounds = {rounds}
local-epochs = {epochs}
batch-size = {batch_size}
lr = {lr}
seed = {seed}
nodes = {nodes}
plan-args = "{plan_args}"
test-path = "{test_path}"
out-path = "{out_path}"
"""

# The same loop as medfed.algorithms.learning.loop.train_local (seeding, shuffling, SGD,
# held-out evaluation before and after), for a process that cannot import medfed.
_FLOWER_TASK = '''"""Local step of the Flower client: medfed's loop, same seeds."""
import json
import time

import torch
from torch.utils.data import DataLoader

from benchapp import plan


def plan_args(context):
    return json.loads(context.run_config["plan-args"])


def evaluate(model, held_out, args):
    model.eval()
    with torch.no_grad():
        p = plan.predict(model, held_out.drop(columns=["label"]), args)
    model.train()
    y = torch.as_tensor(held_out["label"].to_numpy()) == 1
    return {"accuracy": float(((p >= 0.5) == y).double().mean())}


def train(frame, state, args, *, epochs, batch_size, lr, seed, rnd):
    started = time.perf_counter()
    torch.manual_seed(seed * 1_000_003 + rnd)
    model = plan.model(args)
    model.load_state_dict(state)
    held = frame["heldout"] == 1  # medfed's held-out rows, marked by the benchmark
    held_out = frame[held].drop(columns=["heldout"])
    train_set = plan.train_set(frame[~held].drop(columns=["heldout"]), args)
    before = evaluate(model, held_out, args)
    opt = torch.optim.SGD(list(model.parameters()), lr)
    generator = torch.Generator().manual_seed(seed * 7919 + rnd)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=generator)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = plan.loss(model, (x, y))
            loss.backward()
            opt.step()
    after = evaluate(model, held_out, args)
    return model, len(train_set), before, after, time.perf_counter() - started
'''

_FLOWER_CLIENT = '''"""ClientApp: one round of local training on this SuperNode's CSV."""
import pandas as pd
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from benchapp.task import plan_args, train

app = ClientApp()


@app.train()
def train_round(msg: Message, context: Context) -> Message:
    cfg = context.run_config
    frame = pd.read_csv(context.node_config["data-path"])
    state = msg.content["arrays"].to_torch_state_dict()
    rnd = int(msg.content["config"]["server-round"]) - 1  # medfed counts rounds from 0
    model, n, before, after, seconds = train(
        frame, state, plan_args(context), epochs=int(cfg["local-epochs"]),
        batch_size=int(cfg["batch-size"]), lr=float(cfg["lr"]), seed=int(cfg["seed"]), rnd=rnd,
    )
    metrics = MetricRecord({
        "num-examples": n, "train-s": seconds,
        "heldout-accuracy-before": before["accuracy"], "heldout-accuracy": after["accuracy"],
    })
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)
'''

_FLOWER_SERVER = '''"""ServerApp: FedAvg; per-round times and test accuracy to JSON."""
import json
import time

import pandas as pd
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from benchapp import plan

app = ServerApp()


class TimedFedAvg(FedAvg):
    def __init__(self, train_s, **kwargs):
        super().__init__(**kwargs)
        self.train_s = train_s

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        self.train_s[server_round] = [
            float(m.content["metrics"]["train-s"]) for m in replies if m.has_content()
        ]
        return super().aggregate_train(server_round, replies)


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    args = json.loads(cfg["plan-args"])
    test = pd.read_csv(cfg["test-path"])
    x, y = test.drop(columns=["label"]), torch.as_tensor(test["label"].to_numpy()) == 1
    nodes = int(cfg["nodes"])
    calls, train_s = [], {}

    def evaluate_fn(server_round, arrays):
        started = time.time()
        model = plan.model(args)
        model.load_state_dict(arrays.to_torch_state_dict())
        model.eval()
        with torch.no_grad():
            accuracy = float(((plan.predict(model, x, args) >= 0.5) == y).double().mean())
        calls.append({"round": server_round, "start": started, "end": time.time(),
                      "test_accuracy": accuracy})
        return MetricRecord({"accuracy": accuracy})

    strategy = TimedFedAvg(
        train_s, fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=nodes,
        min_evaluate_nodes=0, min_available_nodes=nodes,
    )
    torch.manual_seed(0)
    initial = plan.model(args)
    started = time.time()
    strategy.start(
        grid=grid, initial_arrays=ArrayRecord(initial.state_dict()),
        num_rounds=int(cfg["num-server-rounds"]), evaluate_fn=evaluate_fn,
        train_config=ConfigRecord({"lr": float(cfg["lr"])}),
    )
    with open(cfg["out-path"], "w") as out:
        json.dump({"started": started, "finished": time.time(), "calls": calls,
                   "train_s": {str(k): v for k, v in train_s.items()}}, out)
'''


def flower_python() -> tuple[Path | None, str]:
    """The Flower venv's interpreter (made once: torch 2.13.0 CPU first, then flwr), or why not."""
    venv = PEERS_DIR / "flwr"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import flwr, torch, pandas; print(flwr.__version__)"]
    want = FLWR.split("==")[1]
    if python.exists():
        done = subprocess.run(probe, capture_output=True, text=True, timeout=120)
        if done.returncode == 0 and done.stdout.strip() == want:
            return python, ""
    console.print(f"installing {TORCH} and {FLWR} into {venv} …")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
    for requirement in ([TORCH], [FLWR, "pandas", "numpy"]):
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        done = subprocess.run(
            [*pip, *requirement], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
        )
        if done.returncode != 0:
            tail = [line for line in done.stderr.splitlines() if "ignored" not in line][-3:]
            return None, "pip install failed: " + " | ".join(tail)
    done = subprocess.run(probe, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return None, "flwr does not import: " + done.stderr.strip()[-300:]
    return python, ""


def write_flower_app(
    root: Path,
    shares: list[pd.DataFrame],
    test: pd.DataFrame,
    args: dict[str, Any],
    opts: argparse.Namespace,
) -> tuple[Path, list[Path], Path]:
    """The FAB project, each client's CSV and the test CSV; returns (app, csvs, out JSON)."""
    app = root / "app"
    (app / "benchapp").mkdir(parents=True)
    data = root / "data"
    data.mkdir()
    csvs = []
    for k, share in enumerate(shares):
        path = data / f"client-{k}.csv"
        _, held = holdout_split(share)
        marked = share.assign(heldout=0)
        marked.loc[held.index, "heldout"] = 1
        marked.to_csv(path, index=False)
        csvs.append(path)
    test_path = data / "test.csv"
    test.to_csv(test_path, index=False)
    out = root / "flower-rounds.json"
    (app / "pyproject.toml").write_text(
        _FLOWER_PYPROJECT.format(
            rounds=opts.rounds,
            epochs=opts.epochs,
            batch_size=opts.batch_size,
            lr=opts.lr,
            seed=SEED,
            nodes=len(shares),
            plan_args=json.dumps(args).replace('"', '\\"'),
            test_path=test_path,
            out_path=out,
        )
    )
    files = {
        "__init__.py": '"""medfed benchmark app."""\n',
        "plan.py": plan_source(),
        "task.py": _FLOWER_TASK,
        "client_app.py": _FLOWER_CLIENT,
        "server_app.py": _FLOWER_SERVER,
    }
    for name, text in files.items():
        (app / "benchapp" / name).write_text(text)
    return app, csvs, out


class _Procs:
    """Child processes of one Flower federation, each with its own log; stopped together."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.children: list[subprocess.Popen[bytes]] = []
        self.logs: list[Any] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115
        self.logs.append(log)
        child = subprocess.Popen(
            argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.children.append(child)
        return child

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
        for child in reversed(self.children):
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        for log in self.logs:
            log.close()


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen on {port} within {timeout} s")


def run_flower(
    shares: list[pd.DataFrame],
    test: pd.DataFrame,
    args: dict[str, Any],
    opts: argparse.Namespace,
) -> dict[str, Any]:
    python, why = flower_python()
    if python is None:
        return {"available": False, "reason": why}
    bindir = python.parent
    with workdir("medfed-flower-") as root:
        app, csvs, out = write_flower_app(root, shares, test, args, opts)
        home = root / "flwr-home"
        home.mkdir()
        link_port = free_port()  # one HTTP port: Fleet, Control and Runtime APIs
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "bench"\n\n[superlink.bench]\n'
            f'address = "127.0.0.1:{link_port}"\ninsecure = true\n'
        )
        env = {
            **os.environ,
            "FLWR_HOME": str(home),
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
            # as medfed's plan process (MEDFED_PLAN_THREADS, default 1): 5 clients, 2 cores
            "OMP_NUM_THREADS": os.environ.get("MEDFED_PLAN_THREADS", "1"),
            "MKL_NUM_THREADS": os.environ.get("MEDFED_PLAN_THREADS", "1"),
        }
        env.pop("PYTHONPATH", None)
        procs = _Procs(root, env)
        try:
            started = time.perf_counter()
            link = procs.start(
                "superlink",
                [
                    str(bindir / "flower-superlink"),
                    "--insecure",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(link_port),
                ],
            )
            _wait_port(link_port, 60, link, "flower-superlink")
            for k, csv in enumerate(csvs):
                procs.start(
                    f"supernode-{k}",
                    [
                        str(bindir / "flower-supernode"),
                        "--insecure",
                        "--superlink",
                        f"127.0.0.1:{link_port}",
                        "--port",
                        str(free_port()),
                        "--node-config",
                        f'data-path="{csv}" partition-id={k}',
                    ],
                )
            federation_s = time.perf_counter() - started
            run_started = time.perf_counter()
            with open(root / "flwr-run.log", "wb") as log:
                done = subprocess.run(
                    [str(bindir / "flwr"), "run", str(app), "bench", "--stream"],
                    env=env,
                    cwd=app,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=opts.flower_timeout,
                )
            deadline = time.monotonic() + 60
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not out.exists():
                raise RuntimeError(f"flwr run ended ({done.returncode}) with no results")
            run_s = time.perf_counter() - run_started
        finally:
            procs.stop()
        record = json.loads(out.read_text())
    calls = sorted(record["calls"], key=lambda c: c["round"])
    rounds = []
    for previous, call in itertools.pairwise(calls):
        local = record["train_s"].get(str(call["round"]), [])
        wall = call["start"] - previous["end"]
        slowest = max(local) if local else None
        rounds.append(
            {
                "round": call["round"],
                "wall_s": wall,
                "local_s": slowest,
                "overhead_s": wall - slowest if slowest is not None else None,
                "test_accuracy": call["test_accuracy"],
            }
        )
    return {
        "available": True,
        "version": FLWR.split("==")[1],
        "federation_start_s": round(federation_s, 3),
        "flwr_run_s": round(run_s, 3),
        "training_s": round(record["finished"] - record["started"], 3),
        "final_test_accuracy": round(calls[-1]["test_accuracy"], 4),
        "per_round": rounds,
        **summarise_rounds(rounds),
    }


# --- medfed ---------------------------------------------------------------------------------


def training_rounds(progress: dict[str, Any]) -> list[dict[str, Any]]:
    """Per training round, from the hub's own round timings (``GET /api/trainings/{id}``).

    ``fl.train`` runs as task rounds: prepare (plan approved? enough rows?), then one task
    round per training round (four with secure aggregation: advertise, share, masked,
    unmask), then evaluate. The hub times a task round from the creation of its runs to
    the creation of the next round's runs, so dispatch, the nodes' work, uploads, the hub's
    aggregation and its checkpoint all fall inside. A training round's wall time is the sum
    over its task rounds; its local training time is the slowest node's training as the
    plan process measured it (``history[k].node_seconds``); overhead = wall - that. The
    slowest node's whole step (``node_step_s``: job set-up, plan process, weights in and
    out) is kept too.
    """
    history = {k + 1: h for k, h in enumerate(progress.get("history") or [])}
    by_round: dict[int, list[dict[str, Any]]] = {}
    for timing in progress.get("timings") or []:
        if timing.get("phase") in ("prepare", "evaluate", None):
            continue
        number = int(timing["train_round"]) + 1  # the hub counts training rounds from 0
        by_round.setdefault(number, []).append(timing)
    out = []
    for number in sorted(by_round):
        group = by_round[number]
        if any(t.get("seconds") is None for t in group):
            continue
        wall = sum(float(t["seconds"]) for t in group)
        local = (history.get(number) or {}).get("node_seconds")
        out.append(
            {
                "round": number,
                "phases": [t["phase"] for t in group],
                "phase_s": {t["phase"]: round(float(t["seconds"]), 4) for t in group},
                "phase_node_s": {
                    t["phase"]: round(max(t.get("node_seconds") or [0.0]), 4) for t in group
                },
                "wall_s": wall,
                "local_s": local,
                "overhead_s": wall - local if local is not None else None,
                "node_step_s": sum(max(t.get("node_seconds") or [0.0]) for t in group),
            }
        )
    return out


def run_training(
    fed: Any,
    source: str,
    *,
    columns: list[str],
    plan_args: dict[str, Any],
    rounds: int,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str,
    secagg: dict[str, Any] | None = None,
    name: str = "bench",
    timeout: float = 900.0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``fl.train`` through the SDK on every dataset of ``fed``; its envelope approved first.

    The researcher uploads the initial weights (``model(plan_args)`` of the plan); each
    node's steward approves the training's envelope (plan hash, settings and those weights:
    :func:`medfed.testing.plans.approve_training`, what ``medfed node plans approve``
    records); the researcher starts the training with ``client.learning.start``, follows it
    with ``tasks.wait`` and reads the hub's round timings with ``learning.progress`` and the
    final model with ``learning.download``. ``extra``: more ``fl.train`` parameters.
    """
    from safetensors.torch import load_file

    from medfed.sdk.learning import initial_weights
    from medfed.testing.plans import approve_training

    learning = fed.researcher.learning
    weights = learning.upload_weights(initial_weights(source, plan_args))
    params: dict[str, Any] = {
        "columns": columns,
        "plan_args": plan_args,
        "rounds": rounds,
        "local_epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "device": device,
        "name": name,
        **({"secagg": secagg} if secagg is not None else {}),
        **(extra or {}),
    }
    for node in fed.nodes.values():
        for dataset in node.datasets:
            approve_training(
                [node.folder / "state"],
                source,
                dataset=dataset,
                params={**params, "initial_weights": weights},
                name=name,
            )
    datasets: list[int | str] = sorted({d.name for d in fed.researcher.datasets.list()})
    started = time.perf_counter()
    task = learning.start(source, datasets=datasets, weights=weights, **params)
    final = fed.researcher.tasks.wait(task.id, timeout=timeout, progress=False)
    seconds = time.perf_counter() - started
    if final.status.value != "completed":
        raise RuntimeError(f"training {task.id} ended {final.status.value}: {final.error}")
    result = learning.result(final)
    progress = learning.progress(task.id)
    model = next(m for m in learning.models() if m.task_id == task.id)
    with tempfile.TemporaryDirectory(prefix="medfed-model-") as folder:
        weights = load_file(str(learning.download(model.id, Path(folder) / "model.safetensors")))
    return {
        "task_id": task.id,
        "seconds": seconds,
        "metrics": result.metrics,
        "history": [r.model_dump() for r in result.history],
        "progress": progress.model_dump(mode="json"),
        "weights": weights,
    }


def run_medfed(
    shares: list[pd.DataFrame],
    test: pd.DataFrame,
    args: dict[str, Any],
    opts: argparse.Namespace,
) -> dict[str, Any]:
    """All medfed variants on one federation (5 node processes), one after another."""
    from medfed.testing.federation import Federation

    source = plan_source()
    # secure aggregation: the default (64-bit fixed point, clip 1e6) and a 32-bit variant
    # (clip 1e4 on n_k x update; decoding error ~6e-8 per coordinate here), the layout
    # Flower's SecAgg+ uses by default (32-bit modulus)
    variants: list[tuple[str, dict[str, Any], int, dict[str, Any] | None]] = [
        ("plain", args, opts.rounds, None)
    ]
    if "secagg" not in opts.skip:
        variants.append(("secagg", args, opts.rounds, {}))
    if "big" not in opts.skip:
        big = {**args, "hidden": opts.big_hidden}
        variants += [("big_plain", big, opts.big_rounds, None)]
        if "secagg" not in opts.skip:
            variants += [
                ("big_secagg", big, opts.big_rounds, {}),
                ("big_secagg32", big, opts.big_rounds, {"bits": 32, "clip": 1e4}),
            ]
    out: dict[str, Any] = {}
    node_shares = {f"site-{k}": {"breast_cancer": share} for k, share in enumerate(shares)}
    columns = list(shares[0].columns)
    with workdir("medfed-learning-") as root:
        started = time.perf_counter()
        with Federation(root, node_shares, heartbeat_seconds=5.0) as fed:
            out["federation_start_s"] = round(time.perf_counter() - started, 3)
            for name, plan_args, rounds, secagg in variants:
                console.print(
                    f"medfed {name}: {rounds} rounds, {parameter_count(plan_args):,} parameters …"
                )
                outcome = run_training(
                    fed,
                    source,
                    columns=columns,
                    plan_args=plan_args,
                    rounds=rounds,
                    epochs=opts.epochs,
                    batch_size=opts.batch_size,
                    lr=opts.lr,
                    seed=SEED,
                    device="cpu",
                    secagg=secagg,
                    timeout=opts.medfed_timeout,
                )
                per_round = training_rounds(outcome["progress"])
                out[name] = {
                    "parameters": parameter_count(plan_args),
                    "secure_aggregation": secagg is not None,
                    "secagg_options": secagg,
                    "task_id": outcome["task_id"],
                    "training_s": round(outcome["seconds"], 3),
                    "final_test_accuracy": round(
                        test_accuracy(outcome["weights"], test, plan_args), 4
                    ),
                    "hub_metrics": outcome["metrics"],
                    "per_round": per_round,
                    **summarise_rounds(per_round),
                }
    return out


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "wall_s") -> float | None:
    if not a or not b or key not in a or key not in b or not b[key]["median"]:
        return None
    return round(a[key]["median"] / b[key]["median"], 3)


def print_table(results: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="per training round, seconds (median over rounds)")
    for column in ("run", "params", "rounds", "wall", "local (slowest)", "overhead", "test acc"):
        table.add_column(column, justify="right" if column != "run" else "left")
    rows = [(f"medfed {k}", v) for k, v in results["medfed"].items() if isinstance(v, dict)]
    if results["flower"].get("available"):
        rows.append(("Flower " + results["flower"]["version"], results["flower"]))
    for name, entry in rows:
        table.add_row(
            name,
            f"{entry.get('parameters', results['parameters']):,}",
            str(entry["rounds"]),
            f"{entry['wall_s']['median']:.3f}",
            f"{entry['local_s']['median']:.3f}" if "local_s" in entry else "n/a",
            f"{entry['overhead_s']['median']:.3f}" if "overhead_s" in entry else "n/a",
            f"{entry['final_test_accuracy']:.4f}",
        )
    console.print(table)
    console.print(
        f"pooled (same loop, {results['pooled']['epochs']} epochs): "
        f"test accuracy {results['pooled']['test_accuracy']:.4f}"
    )
    for key, value in results["comparison"].items():
        console.print(f"{key}: {value}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.learning",
        description="Federated learning: medfed against Flower's deployment mode.",
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5, help="local epochs per round")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--hidden", type=int, default=0, help="0: logistic regression")
    parser.add_argument("--big-hidden", type=int, default=31_250, help="~1M parameters")
    parser.add_argument("--big-rounds", type=int, default=5)
    parser.add_argument(
        "--skip", action="append", default=[], choices=["flower", "secagg", "big", "medfed"]
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds, no 1M variant")
    parser.add_argument("--medfed-timeout", type=float, default=900.0)
    parser.add_argument("--flower-timeout", type=float, default=1200.0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.rounds = min(opts.rounds, 3)
        opts.skip.append("big")
    if opts.rounds < 1 or opts.big_rounds < 1 or opts.epochs < 1:
        parser.error("--rounds, --big-rounds and --epochs must be at least 1")
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.perf_counter()
    shares, test, args = load_data()
    if opts.hidden:
        args["hidden"] = opts.hidden
    results: dict[str, Any] = {
        "benchmark": "learning",
        "command": " ".join([".venv/bin/python -m benchmarks.learning", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "settings": {
            "nodes": NODES,
            "alpha": ALPHA,
            "seed": SEED,
            "rounds": opts.rounds,
            "local_epochs": opts.epochs,
            "batch_size": opts.batch_size,
            "lr": opts.lr,
            "hidden": opts.hidden,
            "big_hidden": opts.big_hidden,
            "big_rounds": opts.big_rounds,
            "plan_threads": int(os.environ.get("MEDFED_PLAN_THREADS", "1")),
            "skip": opts.skip,
        },
        "data": {
            "train_rows_per_client": [len(s) for s in shares],
            "positive_fraction_per_client": [round(float(s["label"].mean()), 3) for s in shares],
            "test_rows": len(test),
        },
        "parameters": parameter_count(args),
        "targets": {
            "overhead_s_per_round": TARGET_OVERHEAD_S,
            "secagg_ratio_at_1M": TARGET_SECAGG_RATIO,
        },
    }
    console.print("pooled baseline …")
    results["pooled"] = pooled_baseline(shares, test, args, opts)
    results["medfed"] = {} if "medfed" in opts.skip else run_medfed(shares, test, args, opts)
    if "flower" in opts.skip:
        results["flower"] = {"available": False, "reason": "skipped"}
    else:
        console.print(f"Flower {FLWR}: {opts.rounds} rounds …")
        results["flower"] = run_flower(shares, test, args, opts)
    med, flower = results["medfed"], results["flower"]
    plain = med.get("plain")
    comparison: dict[str, Any] = {
        "flower_over_medfed_wall_per_round": ratio(
            flower if flower.get("available") else None, plain
        ),
        "medfed_overhead_s_median": plain["overhead_s"]["median"] if plain else None,
        "flower_overhead_s_median": (flower.get("overhead_s") or {}).get("median"),
        "secagg_ratio_small": ratio(med.get("secagg"), plain),
        "secagg_ratio_1M": ratio(med.get("big_secagg"), med.get("big_plain")),
        "secagg_ratio_1M_32bit": ratio(med.get("big_secagg32"), med.get("big_plain")),
    }
    comparison["overhead_target_met"] = (
        comparison["medfed_overhead_s_median"] is not None
        and comparison["medfed_overhead_s_median"] < TARGET_OVERHEAD_S
    )
    comparison["secagg_target_met"] = (
        comparison["secagg_ratio_1M"] is not None
        and comparison["secagg_ratio_1M"] <= TARGET_SECAGG_RATIO
    )
    if plain:
        comparison["medfed_accuracy_vs_pooled_points"] = round(
            100 * (plain["final_test_accuracy"] - results["pooled"]["test_accuracy"]), 2
        )
    results["comparison"] = comparison
    results["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    print_table(results)
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {opts.output} ({results['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
