"""Federated learning on a GPU (issue 7): samples/s of a federated round against a plain loop.

Run it on a machine with a GPU as ``python -m benchmarks.learning_gpu`` (``--small``
for a check of a few seconds; ``--device cpu`` runs it anywhere). Options:
``--samples 60000`` images on the node, ``--epochs 4`` local epochs per round, ``--rounds
3``, ``--batch-size 256``, ``--width 32`` (channels of the first convolution),
``--threads 8`` (torch threads, the same on both sides: ``MEDFED_PLAN_THREADS`` for the
node's plan process, ``torch.set_num_threads`` for the plain loop). How it runs:

1. **Data** — synthetic but fixed 3x64x64 images: ``classes`` smooth class templates
   (random 3x4x4, seed 1, upsampled bilinearly) added at half strength to one of 2 048
   fixed Gaussian noise images (seed 2) picked by the row's index, so
   a row is ``(idx, label)`` and its image is a pure function of it. The node holds a CSV
   of ``idx, label``; the plan (:data:`PLAN`, a small CNN: three 3x3 convolutions with
   ReLU and pooling, global average pooling, a linear head) builds the tensors from it.
2. **Plain loop** — a fresh interpreter loads the same plan, builds the same training
   set (the node's training rows: medfed's 2 % held-out rows excluded, the training's
   holdout rule), and trains the same model with
   ``DataLoader(batch_size, shuffle=True)``, SGD and the same learning rate on the same
   device, ``epochs`` passes, after one warm-up pass of 20 batches (CUDA context, cuDNN
   kernels). Samples/s = training samples x epochs / seconds of those passes.
3. **Federated** — a :class:`~medfed.testing.federation.Federation` (hub on SQLite, one
   node process) on 127.0.0.1, the plan approved at the node, ``fl.train`` started through
   the SDK with ``device="auto"`` (→ CUDA) for ``rounds`` rounds. A round's wall time is
   the hub's (:func:`benchmarks.learning.training_rounds`: from the creation of the round's
   run to the creation of the next round's), so it includes dispatch, the weights' download,
   the plan process reading the node's rows and building the tensors, held-out
   evaluation before and after, the update's upload and the hub's aggregation and
   checkpoint. Samples/s = training samples x epochs / round wall time; round 1 also
   starts the plan process and CUDA, so the figure is the median of the later rounds
   (round 1 is reported apart).

Overhead = 1 - federated / plain samples/s; target ≤ 10 %. Also reported: the overhead
against the plain loop charged with building its tensors once per round (its ``setup_s``),
since the plan process rebuilds the node's tensors every round. Prints the figures and writes
``benchmarks/results/learning_gpu.json`` (``--output``), with the GPU's name.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "learning_gpu.json"
SEED = 11
TARGET_OVERHEAD = 0.10

PLAN = '''"""A small CNN on synthetic 3x64x64 images rebuilt from (idx, label) rows."""
import torch
from torch.utils.data import TensorDataset


def model(args):
    torch.manual_seed(int(args.get("init_seed", 0)))
    c, k = int(args.get("width", 32)), int(args["classes"])
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, c, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(c, 2 * c, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(2 * c, 4 * c, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4 * c, k),
    )


def tensors(frame, args):
    k, bank = int(args["classes"]), int(args.get("bank", 2048))
    coarse = torch.randn(k, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    templates = torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear")
    noise = torch.randn(bank, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    idx = torch.as_tensor(frame["idx"].to_numpy().copy(), dtype=torch.long)
    y = torch.as_tensor(frame["label"].to_numpy().copy(), dtype=torch.long)
    x = noise[(idx * 7919) % bank]
    x.add_(templates[y], alpha=float(args.get("signal", 0.5)))
    return x, y


def train_set(frame, args):
    return TensorDataset(*tensors(frame, args))


def loss(model, batch):
    x, y = batch
    return torch.nn.functional.cross_entropy(model(x), y)


def predict(model, frame, args):
    """P(class 1) with two classes (metrics "binary"), else the class (metrics "regression")."""
    x, _ = tensors(frame.assign(label=0), args)
    device = next(model.parameters()).device
    out = torch.cat([model(x[i : i + 1024].to(device)) for i in range(0, len(x), 1024)])
    return out.softmax(1)[:, 1] if out.shape[1] == 2 else out.argmax(1).float()
'''

# The plain loop, run by a fresh interpreter: argv = plan.py, rows.csv, job.json, result.json.
_LOCAL = """
import json, sys, time, importlib.util
import pandas as pd, torch
from torch.utils.data import DataLoader
PLAN, ROWS, JOB, RESULT = sys.argv[1:5]
job = json.load(open(JOB))
torch.set_num_threads(int(job["threads"]))
spec = importlib.util.spec_from_file_location("plan", PLAN)
plan = importlib.util.module_from_spec(spec); spec.loader.exec_module(plan)
device = torch.device("cuda" if job["device"] == "auto" and torch.cuda.is_available()
                      else ("cpu" if job["device"] == "auto" else job["device"]))
args = job["args"]
t0 = time.perf_counter()
train = plan.train_set(pd.read_csv(ROWS), args)
setup_s = time.perf_counter() - t0
torch.manual_seed(job["seed"])
model = plan.model(args).to(device)
opt = torch.optim.SGD(model.parameters(), job["lr"])
loader = DataLoader(train, batch_size=job["batch_size"], shuffle=True,
                    generator=torch.Generator().manual_seed(job["seed"]))
model.train()
def step(batch):
    batch = [b.to(device) for b in batch]
    opt.zero_grad(); plan.loss(model, batch).backward(); opt.step()
for i, batch in enumerate(loader):  # warm-up: CUDA context, cuDNN kernels
    step(batch)
    if i == 19:
        break
if device.type == "cuda":
    torch.cuda.synchronize()
t0 = time.perf_counter()
for _ in range(job["epochs"]):
    for batch in loader:
        step(batch)
if device.type == "cuda":
    torch.cuda.synchronize()
seconds = time.perf_counter() - t0
json.dump({"device": str(device), "samples": len(train) * job["epochs"], "seconds": seconds,
           "setup_s": setup_s, "samples_per_s": len(train) * job["epochs"] / seconds,
           "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
           "torch": torch.__version__}, open(RESULT, "w"))
"""


def rows(n: int, classes: int) -> pd.DataFrame:
    rng = np.random.default_rng(SEED)
    return pd.DataFrame({"idx": np.arange(n), "label": rng.integers(0, classes, n)})


def holdout(job: dict[str, Any]) -> dict[str, Any]:
    """The training's holdout rule: medfed holds out this fraction of the node's rows."""
    return {"fraction": job["holdout"], "seed": 0}


def plain_loop(folder: Path, frame: pd.DataFrame, job: dict[str, Any]) -> dict[str, Any]:
    from medfed.algorithms.learning.holdout import HoldoutRule, split

    (folder / "plan.py").write_text(PLAN)
    train_ids, _ = split(np.arange(len(frame)), HoldoutRule(**holdout(job)))
    frame.iloc[train_ids].to_csv(folder / "rows.csv", index=False)  # medfed's training rows
    (folder / "job.json").write_text(json.dumps(job))
    argv = [sys.executable, "-c", _LOCAL, *(str(folder / n) for n in ("plan.py", "rows.csv"))]
    argv += [str(folder / "job.json"), str(folder / "local.json")]
    subprocess.run(argv, check=True, timeout=1800)
    result: dict[str, Any] = json.loads((folder / "local.json").read_text())
    return result


def federated(
    folder: Path, frame: pd.DataFrame, job: dict[str, Any], rounds: int
) -> dict[str, Any]:
    from benchmarks.learning import run_training, training_rounds
    from medfed.testing.federation import Federation

    os.environ["MEDFED_PLAN_THREADS"] = str(job["threads"])  # the node's plan process
    with Federation(
        folder,
        {"gpu-node": {"images": frame}},
        heartbeat_seconds=5.0,
        hub_env={"MEDFED_MIN_NODES": "1"},
        extra_policy="sole_release = true",  # one node: its steward releases to it alone
    ) as fed:
        outcome = run_training(
            fed,
            PLAN,
            columns=["idx", "label"],
            plan_args=job["args"],
            rounds=rounds,
            epochs=job["epochs"],
            batch_size=job["batch_size"],
            lr=job["lr"],
            seed=job["seed"],
            device=job["device"],
            timeout=3000.0,
            extra={
                "holdout": holdout(job),
                "metrics": "binary" if job["args"]["classes"] == 2 else "regression",
            },
        )
    per_round = training_rounds(outcome["progress"])
    devices = node_devices(folder / "hub" / "hub.db", outcome["task_id"])
    n_train = int(outcome["history"][0].get("samples") or 0)
    for r in per_round:
        r["samples_per_s"] = n_train * job["epochs"] / r["wall_s"] if r["wall_s"] else None
    return {
        "task_id": outcome["task_id"],
        "per_round": per_round,
        "metrics": outcome["metrics"],
        "samples_per_round": n_train * job["epochs"],
        "training_s": round(outcome["seconds"], 3),
        "node_devices": devices,
    }


def node_devices(database: Path, task_id: int) -> list[str]:
    """The devices the node's plan process reported for its training rounds (hub stopped)."""
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from medfed.hub.db.models import Run

    engine = create_engine(f"sqlite:///{database}")
    try:
        with Session(engine) as session:
            outputs = session.scalars(select(Run.output).where(Run.task_id == task_id))
            return sorted({str(o["device"]) for o in outputs if o and "device" in o})
    finally:
        engine.dispose()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learning_gpu")
    parser.add_argument("--samples", type=int, default=60_000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--small", action="store_true", help="2 000 images, 1 epoch, 2 rounds")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.small:
        args.samples, args.epochs, args.rounds = min(args.samples, 2000), 1, 2
    if args.samples < 100 or args.epochs < 1 or args.rounds < 2:
        parser.error("--samples >= 100, --epochs >= 1 and --rounds >= 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.perf_counter()
    frame = rows(opts.samples, opts.classes)
    job = {
        "args": {"classes": opts.classes, "width": opts.width},
        "holdout": 0.02,
        "epochs": opts.epochs,
        "batch_size": opts.batch_size,
        "lr": opts.lr,
        "seed": SEED,
        "device": opts.device,
        "threads": opts.threads,
    }
    with tempfile.TemporaryDirectory(prefix="medfed-gpu-") as tmp:
        root = Path(tmp)
        (root / "local").mkdir()
        local = plain_loop(root / "local", frame, job)
        print(
            f"plain loop: {local['samples_per_s']:.0f} samples/s on {local['device']}", flush=True
        )
        try:
            fed = federated(root / "fed", frame, job, opts.rounds)
        except BaseException:
            for log in sorted((root / "fed").glob("*/*.log")):
                print(f"--- {log}", *log.read_text(errors="replace").splitlines()[-15:], sep="\n")
            raise
    later = [r["samples_per_s"] for r in fed["per_round"][1:] if r.get("samples_per_s")]
    fed_sps = statistics.median(later) if later else None
    overhead = 1 - fed_sps / local["samples_per_s"] if fed_sps else None
    # the plain loop charged with building its tensors once per round, as the plan does
    with_setup = local["samples"] / (local["seconds"] + local["setup_s"])
    overhead_setup = 1 - fed_sps / with_setup if fed_sps else None
    results = {
        "benchmark": "learning_gpu",
        "command": " ".join(["python -m benchmarks.learning_gpu", *(argv or sys.argv[1:])]),
        "machine": {
            "python": platform.python_version(),
            "gpu": local.get("gpu"),
            "torch": local.get("torch"),
            "cpus": os.cpu_count(),
        },
        "settings": {k: v for k, v in vars(opts).items() if k != "output"},
        "plain_loop": local,
        "federated": fed,
        "federated_samples_per_s": round(fed_sps, 1) if fed_sps else None,
        "overhead": round(overhead, 4) if overhead is not None else None,
        "plain_with_setup_samples_per_s": round(with_setup, 1),
        "overhead_vs_plain_with_setup": (
            round(overhead_setup, 4) if overhead_setup is not None else None
        ),
        "target": f"overhead <= {TARGET_OVERHEAD:.0%}",
        "target_met": overhead is not None and overhead <= TARGET_OVERHEAD,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    keys = ("federated_samples_per_s", "overhead", "overhead_vs_plain_with_setup")
    print(json.dumps({k: results[k] for k in keys}))
    for r in fed["per_round"]:
        print(
            f"round {r['round']}: wall {r['wall_s']:.2f} s, node training"
            f" {r['local_s'] or 0:.2f} s, {r['samples_per_s'] or 0:.0f} samples/s"
        )
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {opts.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
