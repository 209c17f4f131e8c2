"""The bubblewrap sandbox of plan code (issue 12): what it costs per run and per round.

Run it as ``.venv/bin/python -m benchmarks.sandbox`` (about 2 to 4 minutes on 2 cores).
Options: ``--starts 20`` (sandbox starts timed), ``--jobs 20`` (warm jobs timed),
``--rounds 5`` (training rounds per federation), ``--skip fl`` (no federation part).
Three parts, one after another, nothing in parallel:

1. **Start-up per run** — ``python -c pass`` started ``--starts`` times bare
   (``subprocess.Popen``) and in the sandbox (:func:`sandboxed_popen`: prlimit, bwrap,
   setpriv, the interpreter); median and p90 wall time of start-to-exit, and the
   difference. Then the cold plan process: :class:`PlanWorker` ``warm_up`` plus its first
   (trivial) job, which waits for torch's import inside, bare (``sandbox="none"``) and in
   the sandbox.
2. **Per round, warm sandbox** — one warm :class:`PlanWorker` each way serves ``--jobs``
   identical jobs (the breast-cancer logistic regression plan, one node's share, 1 epoch):
   median job time; the difference is what the sandbox adds to each round (linking the
   job's files into the sandbox's scratch, copying the outputs back with the size cap).
   Target: at most 50 ms.
3. **FL round time** — a :class:`~medfed.testing.federation.Federation` (hub on SQLite, 3
   nodes on 127.0.0.1) runs ``fl.train`` (``--rounds`` rounds) with the default sandbox,
   then a second federation whose nodes set ``sandbox = "none"``; per-round wall time from
   the hub's round records (:func:`benchmarks.learning.training_rounds`), median, and the
   ratio sandboxed / none. Each node's steward approves the training's pending envelope
   the way a steward does (the first start is refused and held as pending).

It prints the figures and writes ``benchmarks/results/sandbox.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from medfed.algorithms.learning.examples import TABULAR_LOGREG, breast_cancer_shares
from medfed.node.executors.plan_process import PlanFailed, PlanWorker
from medfed.node.executors.sandbox import SandboxLimits, sandboxed_popen

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "sandbox.json"
FEATURES = [f"f{i}" for i in range(30)]
COLUMNS = [*FEATURES, "label"]


def _quantiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 2),
        "n": len(ordered),
    }


def startup(starts: int) -> dict[str, Any]:
    def once(sandboxed: bool, scratch: Path) -> float:
        started = time.perf_counter()
        argv = [sys.executable, "-c", "pass"]
        if sandboxed:
            child = sandboxed_popen(
                argv, scratch=scratch, kind="bwrap", limits=SandboxLimits(), env={}
            )
        else:
            child = subprocess.Popen(argv, cwd=scratch, env={})
        child.wait()
        return time.perf_counter() - started

    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        once(True, scratch)  # the one-time bwrap check
        bare = [once(False, scratch) for _ in range(starts)]
        boxed = [once(True, scratch) for _ in range(starts)]
    out = {"bare": _quantiles(bare), "bwrap": _quantiles(boxed)}
    out["added_ms"] = round(out["bwrap"]["median_ms"] - out["bare"]["median_ms"], 2)
    return out


def _job(folder: Path, frame: pd.DataFrame, args: dict[str, Any]) -> Path:
    from medfed.sdk.learning import initial_weights

    folder.mkdir(parents=True)
    train, holdout = frame.iloc[: int(len(frame) * 0.8)], frame.iloc[int(len(frame) * 0.8) :]
    train.to_parquet(folder / "train.parquet", index=False)
    train.to_parquet(folder / "data.parquet", index=False)
    holdout.drop(columns=["label"]).to_parquet(folder / "holdout.parquet", index=False)
    (folder / "weights.safetensors").write_bytes(initial_weights(TABULAR_LOGREG, args))
    (folder / "plan.py").write_text(TABULAR_LOGREG)
    job = {"epochs": 1, "batch_size": 16, "lr": 0.1, "seed": 0, "round": 0, "args": args}
    (folder / "job.json").write_text(json.dumps({**job, "device": "cpu"}))
    return folder


def _copy_job(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for entry in src.iterdir():
        (dest / entry.name).write_bytes(entry.read_bytes())
    return dest


def warm_jobs(n_jobs: int) -> dict[str, Any]:
    shares, _ = breast_cancer_shares(5, alpha=0.5, seed=0)
    frame = shares[0]
    args = {
        "features": 30,
        "mean": frame[FEATURES].mean().tolist(),
        "scale": frame[FEATURES].std(ddof=0).clip(lower=1e-6).tolist(),
    }
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        template = _job(root / "template", frame, args)
        for kind in ("none", "bwrap"):
            worker = PlanWorker(sandbox=kind, scratch_root=root / f"jobs-{kind}")
            try:
                started = time.perf_counter()
                worker.warm_up()
                trivial = root / f"trivial-{kind}"
                trivial.mkdir()
                (trivial / "plan.py").write_text("raise ValueError('first job')")
                (trivial / "job.json").write_text("{}")
                with contextlib.suppress(PlanFailed):
                    worker.run(trivial, timeout=300)
                cold = time.perf_counter() - started
                times = []
                for i in range(n_jobs + 2):
                    job = _copy_job(template, root / f"job-{kind}-{i}")
                    started = time.perf_counter()
                    worker.run(job, timeout=300)
                    if i >= 2:  # the first two: warm-up of the loop itself
                        times.append(time.perf_counter() - started)
                    assert (job / "update.safetensors").exists()
            finally:
                worker.close()
            out[kind] = {"cold_start_s": round(cold, 3), "job": _quantiles(times)}
    out["added_per_round_ms"] = round(
        out["bwrap"]["job"]["median_ms"] - out["none"]["job"]["median_ms"], 2
    )
    return out


def _train(fed: Any, args: dict[str, Any], rounds: int) -> Any:
    task = fed.researcher.learning.start(
        TABULAR_LOGREG,
        datasets=["cancer"],
        columns=COLUMNS,
        plan_args=args,
        rounds=rounds,
        local_epochs=5,
        batch_size=16,
        lr=0.2,
        seed=0,
    )
    return fed.researcher.tasks.wait(task.id, timeout=900, progress=False)


def fl_rounds(rounds: int) -> dict[str, Any]:
    from benchmarks.learning import training_rounds
    from medfed.node.plans import PlanApprovals
    from medfed.testing.federation import Federation

    shares, _ = breast_cancer_shares(3, alpha=0.5, seed=0)
    pooled = pd.concat(shares)
    args = {
        "features": 30,
        "mean": pooled[FEATURES].mean().tolist(),
        "scale": pooled[FEATURES].std(ddof=0).tolist(),
        "holdout": 0.2,
    }
    env = {"MEDFED_LEASE_SECONDS": "10", "MEDFED_SWEEP_SECONDS": "0.2"}
    out: dict[str, Any] = {}
    for kind in ("bwrap", "none"):
        tables = {f"site-{i}": {"cancer": share} for i, share in enumerate(shares)}
        policy = 'sandbox = "none"' if kind == "none" else ""
        with tempfile.TemporaryDirectory() as folder:
            fed = Federation(
                Path(folder), tables, hub_env=env, heartbeat_seconds=0.5, extra_policy=policy
            )
            with fed:
                _train(fed, args, rounds)  # refused: the nodes hold it as pending
                for node in fed.nodes.values():
                    approvals = PlanApprovals(node.folder / "state")
                    for digest in list(approvals.pending()):
                        approvals.decide(digest, "approved")
                final = _train(fed, args, rounds)
                if final.status.value != "completed":
                    raise RuntimeError(f"the {kind} training ended {final.status.value}")
                progress = fed.researcher.learning.progress(final.id)
                timed = training_rounds(progress.model_dump(mode="json"))
        walls = [r["wall_s"] for r in timed]
        out[kind] = {
            "rounds": len(walls),
            "round_median_s": round(statistics.median(walls), 4),
            "node_step_median_s": round(statistics.median(r["node_step_s"] for r in timed), 4),
        }
    out["ratio_bwrap_over_none"] = round(
        out["bwrap"]["round_median_s"] / out["none"]["round_median_s"], 3
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip", action="append", default=[], choices=["fl"])
    opts = parser.parse_args()
    results: dict[str, Any] = {"startup": startup(opts.starts)}
    print("start-up per run:", json.dumps(results["startup"]))
    results["warm"] = warm_jobs(opts.jobs)
    print("warm plan process:", json.dumps(results["warm"]))
    if "fl" not in opts.skip:
        results["fl"] = fl_rounds(opts.rounds)
        print("FL rounds:", json.dumps(results["fl"]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
