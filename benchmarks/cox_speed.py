"""Cox's per-round pipeline in one process: where a federated Newton round spends its time.

Run it as ``.venv/bin/python -m benchmarks.cox_speed`` (options ``--nodes 5 --rows 20000
--covariates 8 --ties efron``). It draws ``nodes x rows`` patients (seeded: normal
covariates, Weibull event times in whole days up to 2,659, about 40 % censored), then fits
Cox the way hub and nodes do, without processes or HTTP, timing each stage summed over all
rounds and nodes:

* ``local``: the node's local step (:meth:`Cox.local`);
* ``gate``: the gate's output rules (:func:`medfed.node.gate.apply_gate`);
* ``encode``: the body the node sends — canonical JSON, or JSON plus arrays
  (:func:`medfed.common.arrays.outcome_body`) when the code has binary transport — and
  its SHA-256 (the run log's hash; the hub hashes it again);
* ``decode``: the hub reading the body back (JSON parsing; arrays from safetensors);
* ``aggregate``: :meth:`Cox.aggregate`.

It prints the stages, the bytes per node and round, the total, and lifelines'
``CoxPHFitter`` on the pooled rows for scale. Run it with ``PYTHONPATH`` pointing at an
older ``src`` to measure the code before a change in the same conditions (the script
falls back to plain JSON where ``medfed.common.arrays`` does not exist).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from medfed.algorithms.base import Finished, LocalContext, NodeOutput
from medfed.algorithms.registry import get_algorithm
from medfed.common.resources import RunOutcome
from medfed.node.gate import GatePolicy, apply_gate

try:
    from medfed.common.arrays import decode_arrays, decode_body, join, outcome_body

    BINARY = True
except ImportError:  # the code before binary transport
    BINARY = False


class Frame:
    """A :class:`~medfed.algorithms.base.LocalData` over a pandas frame."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    @property
    def columns(self) -> list[Any]:
        return []

    def select(self, columns: Sequence[str], where: Any = None) -> pd.DataFrame:
        return self.frame[list(columns)].copy()

    def count(self, where: Any = None) -> int:
        return len(self.frame)

    def select_batches(self, columns: Sequence[str], where: Any = None) -> Iterator[pd.DataFrame]:
        yield self.select(columns, where)  # one batch: the frame is in memory already


def draw(nodes: int, rows: int, p: int, seed: int = 1) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    n = nodes * rows
    x = rng.normal(size=(n, p))
    beta = np.linspace(-0.4, 0.4, p)
    event = rng.weibull(1.3, n) * 900 * np.exp(-(x @ beta) / 1.3)
    censor = rng.uniform(100, 3500, n)
    time_ = np.minimum(np.minimum(event, censor), 2659)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(p)])
    frame["time"] = np.maximum(np.ceil(time_), 1.0)
    frame["cens"] = ((event <= censor) & (event <= 2659)).astype(int)
    return [frame.iloc[i * rows : (i + 1) * rows].reset_index(drop=True) for i in range(nodes)]


def encode(output: dict[str, Any]) -> bytes:
    outcome = RunOutcome(lease_id="L", status="done", output_status="ok", output=output)
    if BINARY:
        return outcome_body(outcome)
    text = json.dumps(
        outcome.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return text.encode()


def decode(body: bytes) -> dict[str, Any]:
    if BINARY:
        document, binary = decode_body(body)
        outcome = RunOutcome.model_validate_json(document)
        assert outcome.output is not None
        if binary is None:
            return outcome.output
        joined: dict[str, Any] = join(outcome.output, decode_arrays(binary))
        return joined
    output = RunOutcome.model_validate_json(body).output
    assert output is not None
    return output


def fit(parts: list[pd.DataFrame], params: dict[str, Any]) -> tuple[dict[str, float], int, Any]:
    alg = get_algorithm("cox")
    parsed = alg.parse_params(params)
    rules = alg.disclosure(parsed)
    policy = GatePolicy(min_cell_count=5)
    stages = dict.fromkeys(("local", "gate", "encode", "decode", "aggregate"), 0.0)
    state: dict[str, Any] = {}
    sizes: list[int] = []
    for round in range(alg.max_rounds):
        outputs = []
        for i, part in enumerate(parts):
            ctx = LocalContext(data=Frame(part), round=round, state=state, min_cell_count=5)
            t = time.perf_counter()
            out = alg.local(parsed, ctx)
            stages["local"] += time.perf_counter() - t
            t = time.perf_counter()
            gated = apply_gate(out, rules, policy)
            stages["gate"] += time.perf_counter() - t
            assert gated.payload is not None
            t = time.perf_counter()
            body = encode(gated.payload)
            hashlib.sha256(body).hexdigest()
            stages["encode"] += time.perf_counter() - t
            sizes.append(len(body))
            t = time.perf_counter()
            hashlib.sha256(body).hexdigest()
            payload = decode(body)
            stages["decode"] += time.perf_counter() - t
            outputs.append(NodeOutput(node_id=i, dataset_id=i, status="ok", payload=payload))
        t = time.perf_counter()
        step = alg.aggregate(parsed, round, state, outputs)
        stages["aggregate"] += time.perf_counter() - t
        if isinstance(step, Finished):
            return stages, max(sizes), step.result
        state = json.loads(json.dumps(step.state))
    raise RuntimeError("cox: no result")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cox_speed")
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--covariates", type=int, default=8)
    parser.add_argument("--ties", default="efron", choices=("efron", "breslow"))
    args = parser.parse_args(argv)
    parts = draw(args.nodes, args.rows, args.covariates)
    names = [f"x{i}" for i in range(args.covariates)]
    params = {"duration": "time", "event": "cens", "covariates": names, "ties": args.ties}
    fit(parts, params)  # warm-up (imports, caches)
    start = time.perf_counter()
    stages, largest, result = fit(parts, params)
    total = time.perf_counter() - start
    from lifelines import CoxPHFitter

    pooled = pd.concat(parts, ignore_index=True)
    method = "efron" if args.ties == "efron" else "breslow"
    start = time.perf_counter()
    reference = CoxPHFitter(baseline_estimation_method="breslow")
    reference.fit(pooled, "time", "cens")
    lifelines_s = time.perf_counter() - start
    gap = float(np.max(np.abs(np.asarray(result["coef"]) - reference.params_.to_numpy())))
    print(f"binary transport: {BINARY}; {args.nodes} x {args.rows} rows, ties {method}")
    for name, seconds in stages.items():
        print(f"  {name:<10} {seconds:8.3f} s")
    print(f"  total      {total:8.3f} s  ({result['iterations']} Newton rounds)")
    print(f"  largest body per node and round: {largest / 1e6:.2f} MB")
    print(f"  lifelines (pooled, Efron): {lifelines_s:.3f} s; largest |coef gap| {gap:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
