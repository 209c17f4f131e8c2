"""The model runner: ``python -m medfed.node.executors.onnx_process SCRATCH``, sandboxed.

How it runs: the node's validation services (:mod:`.onnx_services`) write the model
(``model.onnx``, already checked against its SHA-256), the selected feature matrix
(``features.npy``) and what to read (``spec.json``: the registry's model reference and
the execution providers to try) into a fresh scratch folder and start this module in
the sandbox (:func:`medfed.node.executors.sandbox.sandboxed_popen`): no network, the
scratch folder the only writable path. It scores the rows with onnxruntime and writes
``scores.npy`` (float64, one per row). Exit status 0: done; 3: the model failed, and
``error.txt`` holds one line for the model's owner with every decimal number replaced
by ``…`` (an error message must not carry an input value). The agent trusts nothing of
this: it reads ``scores.npy`` without following links, with a size cap, as plain data.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

__all__ = ["MODEL_FAILED", "main", "sanitize"]

MODEL_FAILED = 3
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+[eE][-+]?\d+)(?:[eE][-+]?\d+)?")


def sanitize(message: str) -> str:
    """One line, at most 300 characters, decimal numbers masked (shapes stay)."""
    first = next((line.strip() for line in message.splitlines() if line.strip()), "error")
    return _NUMBER.sub("…", first)[:300]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m medfed.node.executors.onnx_process SCRATCH", file=sys.stderr)
        return 2
    scratch = Path(args[0])
    try:
        from medfed.algorithms.validation.params import ModelRef
        from medfed.algorithms.validation.scoring import run_onnx

        spec = json.loads((scratch / "spec.json").read_text())
        model = ModelRef.model_validate(spec["model"])
        features = np.load(scratch / "features.npy", allow_pickle=False)
        data = (scratch / "model.onnx").read_bytes()
        scores = run_onnx(data, model, features, list(spec.get("providers", [])))
        np.save(scratch / "scores.npy", scores.astype(np.float64), allow_pickle=False)
    except BaseException as exc:
        text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        (scratch / "error.txt").write_text(f"{type(exc).__name__}: {sanitize(text)}")
        return MODEL_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
