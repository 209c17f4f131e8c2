"""What a node gives ``validation``'s local step: consent, the model, sandboxed scoring.

:func:`adapt` wraps the agent's run services (:class:`medfed.node.executors.services.
RunServices`: the node's authenticated HTTP client, data dir and policy) as
:class:`~medfed.algorithms.validation.scoring.ValidationServices`. For one run:

* :meth:`NodeValidation.consent` reads the steward's consents (:mod:`.onnx_consent`);
* :meth:`NodeValidation.remember`/``recall`` keep a run's outcomes and scores for the
  task's later (GLM) rounds under ``DATA_DIR/validation/cache/run-TASK-KEY.npz``;
* :meth:`NodeValidation.score` — scores are kept under ``DATA_DIR/validation/cache``
  keyed by the model's hash and the hash of the feature matrix (the GLM's later rounds
  need the same scores; they never leave the node, and files older than a day are
  removed). Otherwise the model is fetched from the hub
  (``GET /api/node/validation/models/{sha}``, only for a model of a validation task the
  node has a run of) into a fresh scratch folder under ``DATA_DIR/validation/jobs``, its
  hash checked, the features written as ``features.npy``, and the runner
  (:mod:`.onnx_process`) started in the sandbox with the node's limits. A failure
  raises :class:`~medfed.algorithms.validation.scoring.ModelFailed` with the runner's
  sanitized line (no input values), which the run carries to the model's owner.
* :meth:`NodeValidation.image_root` and :meth:`NodeValidation.table` — for an image
  model: the folder of the run's dataset file (the imaging index, whose paths are
  relative to it) and the node's other open tables by name (the study's labels), both
  as the agent opened them (``NodeLearning.dataset_paths`` and ``.tables``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medfed.algorithms.base import LocalData
from medfed.algorithms.validation.params import ModelRef
from medfed.algorithms.validation.scoring import Consent, ModelFailed, scores_of
from medfed.common.errors import Refused
from medfed.node.executors.onnx_consent import ConsentStore
from medfed.node.executors.sandbox import SandboxLimits, read_output, sandboxed_popen

__all__ = ["NodeValidation", "adapt", "score_in_sandbox"]

CACHE_SECONDS = 86_400
PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"]
TIMEOUT_S = 3600


def score_in_sandbox(
    model_file: Path,
    model: ModelRef,
    features: npt.NDArray[Any],
    *,
    root: Path,
    sandbox: str,
    limits: SandboxLimits,
) -> npt.NDArray[np.float64]:
    """Run the model over ``features`` in the sandbox; the checked scores."""
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="score-", dir=root))
    try:
        shutil.copyfile(model_file, scratch / "model.onnx")
        np.save(scratch / "features.npy", np.ascontiguousarray(features), allow_pickle=False)
        spec = {"model": model.model_dump(mode="json"), "providers": PROVIDERS}
        (scratch / "spec.json").write_text(json.dumps(spec))
        argv = [sys.executable, "-m", "medfed.node.executors.onnx_process", str(scratch)]
        process = sandboxed_popen(
            argv,
            scratch=scratch,
            kind=sandbox,
            limits=limits,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            code = process.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise ModelFailed(f"the model ran longer than {TIMEOUT_S} s at the node") from None
        if code != 0:
            try:
                line = read_output(scratch / "error.txt", 4096).decode(errors="replace")
            except (OSError, ValueError):
                line = f"the model process ended with status {code} (limits or a crash)"
            raise ModelFailed(f"the model failed at the node: {line.strip()[:400]}")
        limit = limits.output_mb << 20
        try:
            raw = read_output(scratch / "scores.npy", limit)
        except (OSError, ValueError):
            raise ModelFailed("the model process wrote no readable scores") from None
        import io

        scores = np.load(io.BytesIO(raw), allow_pickle=False)
        return scores_of(model, scores, features.shape[0])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class NodeValidation:
    """:class:`ValidationServices` over one run of the agent."""

    def __init__(self, run_services: Any) -> None:
        self.owner = run_services.owner
        self.run = run_services.run
        self.root = Path(self.owner.data_dir) / "validation"

    @property
    def dataset_id(self) -> int:
        return int(self.run.dataset_id)

    def remember(self, key: str, y: npt.NDArray[np.int64], scores: npt.NDArray[np.float64]) -> None:
        kept = self.root / "cache" / f"run-{self.run.task_id}-{key[:32]}.npz"
        kept.parent.mkdir(parents=True, exist_ok=True)
        partial = kept.with_suffix(".part.npz")
        np.savez(partial, y=y, scores=scores)
        partial.replace(kept)

    def recall(self, key: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]] | None:
        kept = self.root / "cache" / f"run-{self.run.task_id}-{key[:32]}.npz"
        try:
            with np.load(kept, allow_pickle=False) as data:
                return np.asarray(data["y"], dtype=np.int64), np.asarray(data["scores"])
        except (OSError, KeyError, ValueError):
            return None

    def image_root(self) -> Path:
        paths: dict[str, Path] = getattr(self.owner, "dataset_paths", {})
        path = paths.get(self.run.dataset_name)
        if path is None:
            raise Refused("validation: this dataset is not a file the node can find images from")
        return Path(path).parent

    def table(self, name: str) -> LocalData:
        tables: dict[str, LocalData] = getattr(self.owner, "tables", {})
        if name not in tables:
            raise Refused(f"validation: this node has no table dataset '{name}'")
        return tables[name]

    def consent(self, study_id: int | None, model: str) -> Consent | None:
        return ConsentStore(self.owner.data_dir).get(study_id, model=model)

    def _fetch(self, sha256: str, dest: Path) -> None:
        from medfed.sdk.http import _error

        digest = hashlib.sha256()
        path = f"/api/node/validation/models/{sha256}?run_id={self.run.run_id}"
        with self.owner.http.stream("GET", path) as response:
            if response.status_code >= 400:
                response.read()
                raise _error(response)
            with open(dest, "wb") as handle:
                for chunk in response.iter_bytes(1 << 20):
                    digest.update(chunk)
                    handle.write(chunk)
        if digest.hexdigest() != sha256:
            raise ModelFailed("the model arrived with a different hash than the study names")

    def score(self, model: ModelRef, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        cache = self.root / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for old in [*cache.glob("*.npy"), *cache.glob("*.npz")]:
            if now - old.stat().st_mtime > CACHE_SECONDS:
                old.unlink(missing_ok=True)
        matrix = np.ascontiguousarray(features)
        key = hashlib.sha256(model.sha256.encode() + matrix.tobytes()).hexdigest()
        cached = cache / f"{key}.npy"
        if cached.is_file():
            return np.asarray(np.load(cached, allow_pickle=False), dtype=np.float64)
        models = self.root / "models"
        models.mkdir(parents=True, exist_ok=True)
        model_file = models / f"{model.sha256}.onnx"
        if not model_file.is_file():
            partial = models / f"{model.sha256}.part"
            self._fetch(model.sha256, partial)
            partial.replace(model_file)
        policy = self.owner.policy
        scores = score_in_sandbox(
            model_file,
            model,
            matrix,
            root=self.root / "jobs",
            sandbox=policy.sandbox,
            limits=SandboxLimits.from_policy(policy),
        )
        np.save(cached, scores, allow_pickle=False)
        return scores


def adapt(run_services: Any) -> NodeValidation:
    """The agent's run services as validation services (see the module text)."""
    if not hasattr(run_services, "owner") or not hasattr(run_services, "run"):
        raise TypeError("validation needs the node agent's run services")
    return NodeValidation(run_services)
