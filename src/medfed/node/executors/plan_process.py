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
``{"ok": true}`` or ``{"ok": false, "kind", "error": "<exception type>: <message>"}``.

The child runs in the bubblewrap sandbox (:mod:`medfed.node.executors.sandbox`; node
policy ``sandbox``): no network, uid 65534, nothing of the node visible but its scratch
folder. Each job's files are hard-linked (read-only for the sandbox) into ``scratch/job``
and what the child wrote there is copied back (regular files only, size-capped). A failed
job raises :class:`PlanFailed`: its ``str()`` is one of :data:`REASONS` (no data), its
``detail`` the exception for the node's run log.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from medfed.common.errors import PolicyRefused
from medfed.node.executors.sandbox import (
    SandboxLimits,
    SandboxUnavailable,
    bwrap_usable,
    prepare_scratch,
    read_output,
    sandboxed_popen,
)
from medfed.node.runlog import RunLog

__all__ = ["REASONS", "PlanFailed", "PlanWorker", "main"]

log = logging.getLogger(__name__)


class PlanFailed(Exception):
    """The plan failed in the sandbox: ``str()`` is a fixed reason with no data in it (what
    the researcher sees); ``detail`` (exception type and message) is for the node's log."""

    def __init__(self, kind: str, detail: str = "") -> None:
        self.kind = kind if kind in REASONS else "exception"
        self.reason = REASONS[self.kind]
        self.detail = detail
        super().__init__(self.reason)


REASONS = {
    "memory": "the plan failed in the sandbox: memory limit",
    "time": "the plan failed in the sandbox: time limit",
    "processes": "the plan failed in the sandbox: process limit",
    "file_size": "the plan failed in the sandbox: file size limit",
    "output": "the plan failed in the sandbox: output size limit",
    "forbidden": "the plan failed in the sandbox: it tried something the sandbox forbids",
    "exception": "the plan failed in the sandbox: it raised an exception",
    "crashed": "the plan failed in the sandbox: the plan process ended without an answer",
}
ANSWER_LIMIT = 64 * 1024  # one JSON line; longer is not an answer


def _clean_env(home: Path) -> dict[str, str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(home),
        "USER": "nobody",
        "LOGNAME": "nobody",
        "OMP_NUM_THREADS": os.environ.get("MEDFED_PLAN_THREADS", "1"),
        "MKL_NUM_THREADS": os.environ.get("MEDFED_PLAN_THREADS", "1"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for name in ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


class PlanWorker:
    """One plan child per node agent, serving jobs one at a time (thread-safe).

    The child runs in the sandbox (:mod:`medfed.node.executors.sandbox`) with one scratch
    folder of its own; each job's files are linked into ``scratch/job`` and what the child
    wrote there is copied back into the job folder (regular files only, at most
    ``limits.output_mb`` in all) before ``scratch/job`` is emptied.
    """

    def __init__(
        self,
        *,
        fresh_process: bool = False,
        sandbox: str = "bwrap",
        limits: SandboxLimits | None = None,
        scratch_root: Path | None = None,
        runlog: RunLog | None = None,
    ) -> None:
        if sandbox not in ("bwrap", "none"):
            raise ValueError(f'unknown sandbox kind {sandbox!r}: use "bwrap" or "none"')
        self.fresh_process = fresh_process
        self.sandbox = sandbox
        self.limits = limits or SandboxLimits()
        self.scratch_root = scratch_root
        self.runlog = runlog
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._home: Path | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        if self.scratch_root is not None:
            self.scratch_root.mkdir(parents=True, exist_ok=True)
        home = Path(tempfile.mkdtemp(prefix="medfed-plan-", dir=self.scratch_root))
        self._home = home
        if self.sandbox == "none":
            log.warning(
                'RUNNING PLAN CODE UNSANDBOXED: this node\'s policy sets sandbox = "none"; '
                "the plan can read the node's files and reach the network"
            )
            if self.runlog is not None:
                self.runlog.append(
                    {"alarm": "sandbox", "problem": 'plan code ran unsandboxed (sandbox = "none")'}
                )
        try:
            return sandboxed_popen(
                [sys.executable, "-m", "medfed.node.executors.plan_process"],
                scratch=home,
                kind=self.sandbox,
                limits=self.limits,
                cwd=home,
                env=_clean_env(home),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,
            )
        except SandboxUnavailable as exc:
            shutil.rmtree(home, ignore_errors=True)
            self._home = None
            raise PolicyRefused(f"this node runs no plan code: {exc}") from None

    def warm_up(self) -> None:
        """Start the child now (it imports torch while the hub runs the next round).

        :class:`PolicyRefused` where the node needs a sandbox and bubblewrap is missing."""
        if self.fresh_process:
            if self.sandbox == "bwrap" and (problem := bwrap_usable()) is not None:
                raise PolicyRefused(f"this node runs no plan code: {problem}")
            return
        with self._lock:
            if self._child is None or self._child.poll() is not None:
                self._stop_child()
                self._child = self._start()

    def run(self, job_dir: Path, timeout: float | None = None) -> None:
        """Run the job in ``job_dir``; :class:`PlanFailed` names what went wrong."""
        with self._lock:
            if self._child is None or self._child.poll() is not None:
                self._stop_child()
                self._child = self._start()
            child = self._child
            assert child.stdin is not None and child.stdout is not None and self._home
            inside = self._home / "job"
            inputs = _link_in(job_dir, inside)
            killed = threading.Event()
            try:
                try:
                    child.stdin.write((json.dumps({"job": str(inside)}) + "\n").encode())
                    child.stdin.flush()
                    line = _read_line(child.stdout, child, timeout, killed)
                except (BrokenPipeError, OSError):
                    line = b""
                answer = _parse(line)
                if answer is None or self.fresh_process or answer.get("retire"):
                    self._stop_child()
                if answer is None:
                    raise PlanFailed(*_death(child.returncode, killed.is_set()))
                if not answer.get("ok"):
                    kind = str(answer.get("kind", "exception"))
                    raise PlanFailed(kind, str(answer.get("error", ""))[:2000])
                _copy_out(inside, job_dir, inputs, self.limits.output_mb << 20)
            finally:
                shutil.rmtree(inside, ignore_errors=True)

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def close(self) -> None:
        with self._lock:
            self._stop_child()


def _link_in(job_dir: Path, inside: Path) -> set[tuple[int, int]]:
    """Hard-link (or copy) the job's files into the sandbox's ``job`` folder: the sandbox
    uid can read but not change them. Returns their (device, inode) pairs."""
    shutil.rmtree(inside, ignore_errors=True)
    inside.mkdir()
    prepare_scratch(inside)
    seen: set[tuple[int, int]] = set()
    for entry in job_dir.iterdir():
        if not entry.is_file() or entry.is_symlink():
            continue
        target = inside / entry.name
        try:
            os.link(entry, target)
        except OSError:
            shutil.copyfile(entry, target)
        info = target.stat()
        seen.add((info.st_dev, info.st_ino))
    return seen


def _copy_out(inside: Path, job_dir: Path, inputs: set[tuple[int, int]], limit: int) -> None:
    """Copy what the child wrote back into ``job_dir``: regular files only, within limit."""
    for entry in sorted(inside.iterdir()):
        info = entry.lstat()
        if (info.st_dev, info.st_ino) in inputs:
            continue
        if not stat.S_ISREG(info.st_mode):
            raise PlanFailed("forbidden", f"the plan left {entry.name}, not a regular file")
        try:
            data = read_output(entry, limit)
        except ValueError:
            raise PlanFailed("output", f"{entry.name}: past {limit} bytes of output") from None
        except OSError as exc:
            raise PlanFailed("forbidden", f"{entry.name}: {exc}") from None
        limit -= len(data)
        (job_dir / entry.name).write_bytes(data)


def _parse(line: bytes) -> dict[str, Any] | None:
    if not line.endswith(b"\n"):
        return None
    try:
        answer = json.loads(line)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def _death(returncode: int | None, timed_out: bool) -> tuple[str, str]:
    """Why the child ended without an answer: a fixed kind, and its exit status."""
    detail = f"the plan process ended with status {returncode}"
    if timed_out:
        return "time", detail + " (killed: round timeout)"
    code = returncode or 0
    signals = {signal.SIGXCPU: "time", signal.SIGXFSZ: "file_size"}
    for sig, kind in signals.items():
        if code in (128 + sig, -sig):
            return kind, detail
    return "crashed", detail


def _read_line(
    stream: IO[bytes],
    child: subprocess.Popen[bytes],
    timeout: float | None,
    killed: threading.Event | None = None,
) -> bytes:
    """The child's answer line (at most :data:`ANSWER_LIMIT` bytes); the child is killed
    when ``timeout`` passes first (``killed`` is set then)."""
    if timeout is None:
        return stream.readline(ANSWER_LIMIT)

    def kill() -> None:
        if killed is not None:
            killed.set()
        child.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        return stream.readline(ANSWER_LIMIT)
    finally:
        timer.cancel()


def _serve_job(job_dir: Path) -> None:
    """One job: ``train.parquet`` and ``holdout.parquet`` (no label) in, update and
    predictions out (``update.safetensors``, ``predictions.safetensors``, ``result.json``
    with counts, device and seconds — never metrics: the agent computes those)."""
    import pandas as pd
    from safetensors.torch import load_file, save_file

    from medfed.algorithms.learning.loop import TrainConfig, load_plan, train_local

    job: dict[str, Any] = json.loads((job_dir / "job.json").read_text())
    plan = load_plan(job_dir / "plan.py")
    frame = pd.read_parquet(job_dir / "train.parquet")
    held_out = pd.read_parquet(job_dir / "holdout.parquet")
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
    result = train_local(plan, frame, held_out, weights, config)
    save_file(result.update, str(job_dir / "update.safetensors"))
    predictions = {
        "global": result.global_predictions.contiguous(),
        "local": result.local_predictions.contiguous(),
    }
    save_file(predictions, str(job_dir / "predictions.safetensors"))
    (job_dir / "result.json").write_text(
        json.dumps(
            {
                "n_train": result.n_train,
                "n_eval": result.n_eval,
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


def _kind(exc: BaseException) -> str:
    """The fixed kind of a plan's exception (the agent maps it to a reason with no data)."""
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, OSError):
        if exc.errno == errno.EFBIG:
            return "file_size"
        if exc.errno == errno.ENOMEM:
            return "memory"
        if exc.errno == errno.EAGAIN:  # fork/clone past the process limit
            return "processes"
        return "forbidden"
    return "exception"


def _cpu_seconds() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    """Child loop: one job per stdin line, one answer per stdout line.

    A failed job answers ``{"ok": false, "kind", "error"}`` (kind: memory, file_size,
    processes, forbidden, exception). A child that used more than half its CPU-time limit
    says ``"retire": true`` and the agent starts a fresh one for the next job."""
    import importlib
    import resource

    import torch  # noqa: F401  (imported once, before the first job)

    # torch's optimizers import torch._dynamo on first use (1.5 s and more on busy cores):
    # pay it now, while the hub runs the prepare round, not inside the first training round
    with contextlib.suppress(ImportError):
        importlib.import_module("torch._dynamo")

    cpu_limit = resource.getrlimit(resource.RLIMIT_CPU)[0]
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
            error = f"{type(exc).__name__}: {exc}"[:2000]
            answer = {"ok": False, "kind": _kind(exc), "error": error}
        if cpu_limit != resource.RLIM_INFINITY and _cpu_seconds() > cpu_limit / 2:
            answer["retire"] = True
        out.write((json.dumps(answer) + "\n").encode())
        out.flush()


if __name__ == "__main__":
    main()
