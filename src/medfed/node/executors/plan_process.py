"""The plan process: where an approved training plan runs, apart from the node agent.

Parent side (:class:`PlanWorker`, in the agent): the first job starts a child
``python -m medfed.node.executors.plan_process`` with a *clean* environment (only
``PATH``, ``HOME`` set to its own temporary folder, thread limits and — for CUDA —
``CUDA_VISIBLE_DEVICES`` when the agent had it; never the hub URL, the node secret or the
agent's other variables), its working directory a fresh temporary folder and no stdin
other than the job pipe. The child imports torch once and then serves jobs, one JSON line
each on stdin, answering one JSON line on stdout; a child that dies is started again for
the next job. ``fresh_process=True`` starts one child per job instead (slower: torch is
imported every time).

A job is a folder the agent wrote *after* it checked the plan's hash against its
approvals: ``plan.py`` (the approved source), ``data.parquet`` (the node's rows of the
columns the training asked for), ``weights.safetensors`` (the global model) and
``job.json`` (epochs, batch size, learning rate, FedProx ``mu``, seed, round, device,
plan args). The child writes ``update.safetensors`` (local - global per tensor) and
``result.json`` (counts, metrics, device, seconds) there and answers
``{"ok": true}`` or ``{"ok": false, "error": "<exception type>: <message>"}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

__all__ = ["PlanFailed", "PlanWorker", "main"]


class PlanFailed(Exception):
    """The plan raised, or the plan process died; the message says which."""


def _clean_env(home: Path) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(home),
        "OMP_NUM_THREADS": os.environ.get("MEDFED_PLAN_THREADS", "1"),
        "MKL_NUM_THREADS": os.environ.get("MEDFED_PLAN_THREADS", "1"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for name in ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


class PlanWorker:
    """One plan child per node agent, serving jobs one at a time (thread-safe)."""

    def __init__(self, *, fresh_process: bool = False) -> None:
        self.fresh_process = fresh_process
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._home: tempfile.TemporaryDirectory[str] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        self._home = tempfile.TemporaryDirectory(prefix="medfed-plan-")
        home = Path(self._home.name)
        return subprocess.Popen(
            [sys.executable, "-m", "medfed.node.executors.plan_process"],
            cwd=home,
            env=_clean_env(home),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            close_fds=True,
        )

    def warm_up(self) -> None:
        """Start the child now (it imports torch while the hub runs the next round)."""
        if self.fresh_process:
            return
        with self._lock:
            if self._child is None or self._child.poll() is not None:
                self._child = self._start()

    def run(self, job_dir: Path, timeout: float | None = None) -> None:
        """Run the job in ``job_dir``; :class:`PlanFailed` names what went wrong."""
        with self._lock:
            if self._child is None or self._child.poll() is not None:
                self._child = self._start()
            child = self._child
            assert child.stdin is not None and child.stdout is not None
            try:
                child.stdin.write((json.dumps({"job": str(job_dir)}) + "\n").encode())
                child.stdin.flush()
                line = _read_line(child.stdout, child, timeout)
            except (BrokenPipeError, OSError):
                line = b""
            if self.fresh_process or not line:
                self._stop_child()
            if not line:
                raise PlanFailed("the plan process ended without an answer (crashed or killed)")
            answer = json.loads(line)
            if not answer.get("ok"):
                raise PlanFailed(str(answer.get("error", "the plan failed")))

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        if self._home is not None:
            self._home.cleanup()
            self._home = None

    def close(self) -> None:
        with self._lock:
            self._stop_child()


def _read_line(stream: IO[bytes], child: subprocess.Popen[bytes], timeout: float | None) -> bytes:
    if timeout is None:
        return stream.readline()
    timer = threading.Timer(timeout, child.kill)
    timer.start()
    try:
        return stream.readline()
    finally:
        timer.cancel()


def _serve_job(job_dir: Path) -> None:
    import pandas as pd
    from safetensors.torch import load_file, save_file

    from medfed.algorithms.learning.loop import TrainConfig, load_plan, train_local

    job: dict[str, Any] = json.loads((job_dir / "job.json").read_text())
    plan = load_plan(job_dir / "plan.py")
    frame = pd.read_parquet(job_dir / "data.parquet")
    weights = load_file(str(job_dir / "weights.safetensors"))
    config = TrainConfig(
        epochs=int(job["epochs"]),
        batch_size=int(job["batch_size"]),
        lr=float(job["lr"]),
        mu=float(job.get("mu", 0.0)),
        seed=int(job["seed"]),
        round=int(job["round"]),
        device=str(job.get("device", "auto")),
        args=dict(job.get("args", {})),
        **_dp_sgd(job.get("dp_sgd")),
    )
    result = train_local(plan, frame, weights, config)
    save_file(result.update, str(job_dir / "update.safetensors"))
    (job_dir / "result.json").write_text(
        json.dumps(
            {
                "n_train": result.n_train,
                "n_eval": result.n_eval,
                "global_metrics": result.global_metrics,
                "local_metrics": result.local_metrics,
                "device": result.device,
                "seconds": result.seconds,
                "dp_sgd_epsilon": result.dp_sgd_epsilon,
            }
        )
    )


def _dp_sgd(raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        return {}
    return {
        "dp_sgd_noise": float(raw["noise_multiplier"]),
        "dp_sgd_clip": float(raw["max_grad_norm"]),
        "dp_sgd_delta": float(raw["delta"]),
    }


def main() -> None:
    """Child loop: one job per stdin line, one answer per stdout line."""
    import importlib

    import torch  # noqa: F401  (imported once, before the first job)

    # torch's optimizers import torch._dynamo on first use (1.5 s and more on busy cores):
    # pay it now, while the hub runs the prepare round, not inside the first training round
    with contextlib.suppress(ImportError):
        importlib.import_module("torch._dynamo")

    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # a plan's print() must not corrupt the answer channel
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            _serve_job(Path(json.loads(line)["job"]))
            answer: dict[str, Any] = {"ok": True}
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        out.write((json.dumps(answer) + "\n").encode())
        out.flush()


if __name__ == "__main__":
    main()
