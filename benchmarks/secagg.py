"""Secure-aggregation micro-benchmark (issue 7): what SecAgg adds to a round at 1M params.

Run: ``.venv/bin/python -m benchmarks.secagg [--params 1000000] [--clients 5] [--repeat 3]
[--bits 32 64] [--no-train] [--clock cpu|wall]``. How it runs, all in this one process on the CPU:

1. **plain**: the hub's sum of ``--clients`` float32 updates (what FedAvg does without
   secure aggregation).
2. **secagg**, for each ``--bits`` (the masked vector is 4 or 8 bytes a value), three
   scenarios (no dropout; one client drops after sending its masked input; one drops
   before masking): every client's phases (advertise, share keys, mask,
   unmask) and every server phase (directory, inboxes, running sum of masked inputs,
   unmask request, aggregate) timed separately, messages passed through JSON as the hub
   would relay them. Clients run on separate machines in a deployment, so the time SecAgg
   adds to a round's critical path is the slowest client's work plus the server's work
   (``critical_path_s``); ``serial_s`` is all of it on one core.
3. **PRG**: the vectorized AES-256-CTR expansion of one mask, alone.
4. **reference round** (unless ``--no-train``): one local epoch of a 1.07M-parameter MLP
   (784-1024-256-10, 1,024 samples, batch 64, SGD) on this CPU, as a stand-in for the
   local-training part of a round, to turn the added seconds into a round-level factor
   ``(train + plain + secagg critical path) / (train + plain)``. Transport is left out of
   both (the masked uint32 vector has exactly the size of the float32 update; the key and
   share messages are listed in ``message_bytes``), so the true factor is lower still.

Clock: by default every figure is CPU seconds of this process on one core
(``time.process_time``; the masking code and numpy's sums are single-threaded and torch is
set to one thread), which other processes competing for the cores barely inflate;
``--clock wall`` measures wall time instead.

Prints a table and writes ``benchmarks/results/secagg.json`` with the best of
``--repeat`` repetitions of each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.dispatch import machine
from medfed.algorithms.learning.secagg import SecAggClient, SecAggConfig, _prg
from medfed.algorithms.learning.secagg_server import SecAggServer

RESULTS = Path(__file__).parent / "results" / "secagg.json"


def _wire(message: dict[str, Any]) -> tuple[dict[str, Any], int]:
    text = json.dumps(message)
    return json.loads(text), len(text)


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def _timed(laps: dict[str, float], name: str, action: Callable[[], Any]) -> Any:
    started = clock()
    value = action()
    laps[name] += clock() - started
    return value


def secagg_round(
    updates: dict[int, np.ndarray], *, bits: int, drop_before: int | None, drop_after: int | None
) -> dict[str, Any]:
    ids = tuple(sorted(updates))
    size = next(iter(updates.values())).size
    config = SecAggConfig(
        round_id="bench", participants=ids, threshold=len(ids) // 2 + 1, size=size, bits=bits
    )
    client_s: dict[int, float] = defaultdict(float)
    server: dict[str, float] = defaultdict(float)
    sizes: dict[str, int] = defaultdict(int)
    hub = SecAggServer(config)
    clients = {i: SecAggClient(config, i) for i in ids}
    for i, c in clients.items():
        laps: dict[str, float] = defaultdict(float)
        message, n = _wire(_timed(laps, "c", c.advertise))
        sizes["advertise"] += n
        client_s[i] += laps["c"]
        _timed(server, "receive", lambda m=message: hub.receive_advert(m))
    directory, n = _wire(_timed(server, "directory", hub.directory))
    sizes["directory"] = n
    for i, c in clients.items():
        laps = defaultdict(float)
        message, n = _wire(_timed(laps, "c", lambda c=c: c.share_keys(directory)))
        sizes["share_keys"] += n
        client_s[i] += laps["c"]
        _timed(server, "receive", lambda m=message: hub.receive_shares(m))
    for i, c in clients.items():
        if i == drop_before:
            continue
        inbox, n = _wire(_timed(server, "inbox", lambda i=i: hub.inbox(i)))
        sizes["inbox"] += n
        laps = defaultdict(float)
        masked = _timed(laps, "c", lambda c=c, i=i, b=inbox: c.mask(updates[i], b))
        client_s[i] += laps["c"]
        _timed(server, "sum_masked", lambda i=i, v=masked: hub.receive_masked(i, v))
    request, n = _wire(_timed(server, "unmask_request", hub.unmask_request))
    for i, c in clients.items():
        if i in (drop_before, drop_after):
            continue
        laps = defaultdict(float)
        reveal, n = _wire(_timed(laps, "c", lambda c=c: c.unmask(request)))
        sizes["unmask"] += n
        client_s[i] += laps["c"]
        _timed(server, "receive", lambda m=reveal: hub.receive_reveal(m))
    total = _timed(server, "aggregate", hub.aggregate)
    senders = [i for i in ids if i != drop_before]
    plain = np.sum([updates[i].astype(np.float64) for i in senders], axis=0)
    error = float(np.max(np.abs(total - plain)))
    assert error <= config.error_bound, (error, config.error_bound)
    server_s = sum(server.values())
    return {
        "client_max_s": max(client_s.values()),
        "server_s": server_s,
        "critical_path_s": max(client_s.values()) + server_s,
        "serial_s": sum(client_s.values()) + server_s,
        "server_phases_s": dict(server),
        "max_abs_error": error,
        "error_bound": config.error_bound,
        "message_bytes": dict(sizes),
    }


def reference_epoch() -> tuple[float, int]:
    import torch

    torch.set_num_threads(1)  # one core, like every other figure here
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 256),
        torch.nn.ReLU(), torch.nn.Linear(256, 10),
    )  # fmt: skip
    n_params = sum(p.numel() for p in model.parameters())
    x, y = torch.randn(1024, 784), torch.randint(0, 10, (1024,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    started = clock()
    for batch in range(0, 1024, 64):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            model(x[batch : batch + 64]), y[batch : batch + 64]
        )
        loss.backward()
        optimizer.step()
    return clock() - started, n_params


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: float(r["critical_path_s"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bits", type=int, nargs="+", default=[32, 64], choices=[32, 64])
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    info = machine()
    rng = np.random.default_rng(0)
    updates = {
        i: rng.uniform(-1, 1, args.params).astype(np.float32) for i in range(1, args.clients + 1)
    }
    plain_s = []
    for _ in range(args.repeat):
        started = clock()
        total = np.zeros(args.params, dtype=np.float64)
        for update in updates.values():  # a running sum, as the hub adds updates on arrival
            total += update
        plain_s.append(clock() - started)
    scenarios = {
        "no_dropout": {"drop_before": None, "drop_after": None},
        "drop_after_masking": {"drop_before": None, "drop_after": args.clients},
        "drop_before_masking": {"drop_before": args.clients, "drop_after": None},
    }
    results: dict[str, Any] = {}
    for bits in args.bits:
        for name, drops in scenarios.items():
            runs = [secagg_round(updates, bits=bits, **drops) for _ in range(args.repeat)]
            results[f"{name}_{bits}bit"] = best(runs)
    prg_s = []
    for _ in range(args.repeat):
        started = clock()
        for peer in range(args.clients):
            _prg(bytes([peer]) * 32, args.params, np.uint32)
        prg_s.append(clock() - started)
    plain = min(plain_s)
    summary: dict[str, Any] = {
        "benchmark": "secagg",
        "command": ".venv/bin/python -m benchmarks.secagg",
        "machine": info,
        "settings": {
            "params": args.params,
            "clients": args.clients,
            "repeat": args.repeat,
            "bits": args.bits,
            "clock": args.clock,
            "threshold": args.clients // 2 + 1,
        },
        "plain_sum_s": plain,
        "prg_masks_s": {"count": args.clients, "seconds": min(prg_s)},
        "secagg": results,
        "overhead_vs_plain_sum": {k: v["critical_path_s"] / plain for k, v in results.items()},
        "target": "secure aggregation overhead at most 1.5x on a round at 1M parameters",
    }
    if not args.no_train:
        epochs = [reference_epoch() for _ in range(args.repeat)]
        train_s, n_params = min(epochs)
        summary["reference_round"] = {
            "model_params": n_params,
            "local_epoch_s": train_s,
            "round_factor": {
                k: (train_s + plain + v["critical_path_s"]) / (train_s + plain)
                for k, v in results.items()
            },
        }
    summary["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(f"plain sum of {args.clients} x {args.params:,} float32: {plain * 1e3:8.1f} ms")
    print(f"PRG, {args.clients} masks of {args.params:,} uint32: {min(prg_s) * 1e3:8.1f} ms")
    for name, r in results.items():
        print(
            f"secagg {name:26s} client max {r['client_max_s'] * 1e3:7.1f} ms  server "
            f"{r['server_s'] * 1e3:7.1f} ms  critical path {r['critical_path_s'] * 1e3:7.1f} ms"
            f"  ({r['critical_path_s'] / plain:5.1f}x plain sum)"
        )
    if "reference_round" in summary:
        ref = summary["reference_round"]
        print(
            f"reference local epoch ({ref['model_params']:,} params): {ref['local_epoch_s']:.3f} s"
        )
        for name, factor in ref["round_factor"].items():
            print(f"round factor with secagg, {name:26s}: {factor:.3f}x")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
