"""Dispatch latency (issue 2): how long a run takes hub → node → hub, and a 3-node mean.

Run it as ``.venv/bin/python -m benchmarks.dispatch`` (or ``make bench``). Options:
``--runs 200`` noop tasks per node count, ``--nodes 1 10``, ``--mean-tasks 50``,
``--quick`` (30 runs on 1 node and 10 mean tasks: about 30 s on 2 idle cores),
``--hub-env MEDFED_X=VALUE`` to try a hub setting. How it runs:

1. For each node count N it starts a :class:`~medfed.testing.federation.Federation` in a
   temporary folder: a hub process (SQLite) and N node processes on 127.0.0.1, each
   holding a 50-row CSV of numbers made with a fixed seed. One warm-up task per node runs
   first. Then, ``--runs`` times, one after another, it submits a ``noop`` task on ONE
   dataset (rotating over the nodes, so every node is used while the others sit in their
   long poll) and times ``client.tasks.submit`` + ``client.tasks.wait``: submit until the
   task is completed. No sleeps anywhere: the node's poll and the researcher's wait are
   long polls the hub answers when the change is committed.
2. It starts three nodes holding the GBSG2 split of :mod:`medfed.testing.demo` and times
   ``--mean-tasks`` ``mean`` tasks over age, tsize, pnodes and time the same way (and
   checks the last result against pandas).
3. It reads the CPU time of the hub, node and researcher processes around the measured
   tasks (``/proc``), and, once a federation has stopped, the hub's own timestamps (task
   stored, run claimed, outcome stored, the node's local-step time) from the hub
   database, to split each latency into the legs listed in :data:`LEGS`.

It prints two tables and writes ``benchmarks/results/dispatch.json`` (figures, settings,
machine, load average, git commit). Every process is stopped on the way out (the
``with Federation`` block), every wait has a timeout, and everything listens on
127.0.0.1 only; a failed step keeps its temporary folder and prints the log tails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from medfed.algorithms.stats.moments import MeanResult
from medfed.common.resources import TaskStatus
from medfed.common.timeutil import aware
from medfed.hub.config import HubSettings
from medfed.hub.db.models import Run, Task
from medfed.hub.db.session import make_engine, make_sessionmaker
from medfed.sdk.client import Client
from medfed.testing.demo import load_gbsg2, split_gbsg2
from medfed.testing.federation import Federation

RESULTS = Path(__file__).resolve().parent / "results" / "dispatch.json"
MEAN_COLUMNS = ["age", "tsize", "pnodes", "time"]
TARGET_DISPATCH_P50_MS = 50.0
TARGET_MEAN_TASK_MS = 300.0
TASK_TIMEOUT_S = 30.0
SEED = 20240502

console = Console(width=max(Console().width, 100))


@dataclass
class Stats:
    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    max: float

    @classmethod
    def of(cls, values_ms: Sequence[float]) -> Stats:
        a = np.asarray(values_ms, dtype=float)
        if a.size == 0:
            return cls(0, *(float("nan"),) * 5)
        p50, p90, p99 = np.percentile(a, [50, 90, 99])
        return cls(int(a.size), float(p50), float(p90), float(p99), float(a.mean()), float(a.max()))


@dataclass
class Timed:
    """One task as the researcher saw it: wall-clock submit time and latency."""

    task_id: int
    submitted: float  # time.time() just before submit
    latency_ms: float


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A temporary folder, removed on success and kept (with its logs) when a step fails."""
    root = Path(tempfile.mkdtemp(prefix="medfed-bench-"))
    try:
        yield root
    except BaseException:
        console.print(f"[red]failed[/red]; hub and node logs kept in {root}")
        for log in sorted(root.glob("*/*.log")):
            tail = log.read_text(errors="replace").splitlines()[-5:]
            console.print(f"--- {log.relative_to(root)}", *tail, sep="\n", markup=False)
        raise
    shutil.rmtree(root, ignore_errors=True)


def number_shares(n_nodes: int, rows: int = 50) -> dict[str, dict[str, pd.DataFrame]]:
    rng = np.random.default_rng(SEED)
    shares = {}
    for i in range(n_nodes):
        frame = pd.DataFrame(
            {
                "x": rng.normal(50.0, 10.0, rows).round(3),
                "y": rng.integers(0, 100, rows),
                "z": rng.exponential(2.0, rows).round(3),
            }
        )
        shares[f"node-{i:02d}"] = {"numbers": frame}
    return shares


def timed_task(client: Client, algorithm: str, datasets: list[int | str], **params: Any) -> Timed:
    submitted = time.time()
    started = time.perf_counter()
    task = client.tasks.submit(algorithm, datasets=datasets, **params)
    done = client.tasks.wait(task.id, timeout=TASK_TIMEOUT_S, progress=False)
    latency_ms = (time.perf_counter() - started) * 1000.0
    if done.status != TaskStatus.completed:
        raise RuntimeError(f"task {task.id} ended {done.status.value}: {done.error}")
    return Timed(task.id, submitted, latency_ms)


LEGS = {
    "submit_to_stored": "researcher submits → hub has stored the task and its runs",
    "stored_to_claimed": "task stored → last node has claimed its run (long-poll wake-up)",
    "claimed_to_outcome": "a node's claim → its outcome stored (slowest node; what it sees)",
    "local_step": "the node's own local step + gate (slowest node)",
    "outcome_to_researcher": "last outcome stored → researcher's wait has returned the result",
}


def hub_legs(root: Path, timed: Sequence[Timed]) -> dict[str, Stats]:
    """Split each latency into :data:`LEGS` from the hub's own timestamps (hub stopped)."""
    settings = HubSettings(data_dir=root / "hub", dev_mode=True)
    engine = make_engine(settings.effective_database_url)
    legs: dict[str, list[float]] = {name: [] for name in LEGS}
    try:
        with make_sessionmaker(engine)() as session:
            for t in timed:
                task = session.get(Task, t.task_id)
                runs = list(session.scalars(select(Run).where(Run.task_id == t.task_id)))
                spans = [
                    (aware(r.claimed_at).timestamp(), aware(r.finished_at).timestamp())
                    for r in runs
                    if r.claimed_at is not None and r.finished_at is not None
                ]
                if task is None or not spans or len(spans) != len(runs):
                    continue
                created = aware(task.created_at).timestamp()
                done = t.submitted + t.latency_ms / 1000.0
                legs["submit_to_stored"].append((created - t.submitted) * 1000.0)
                legs["stored_to_claimed"].append((max(c for c, _ in spans) - created) * 1000.0)
                legs["claimed_to_outcome"].append(max(f - c for c, f in spans) * 1000.0)
                legs["local_step"].append(max((r.duration_s or 0.0) for r in runs) * 1000.0)
                legs["outcome_to_researcher"].append((done - max(f for _, f in spans)) * 1000.0)
    finally:
        engine.dispose()
    return {name: Stats.of(values) for name, values in legs.items()}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from ``/proc`` (None where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU time the hub, the nodes and this (researcher) process spend between two points."""

    def __init__(self, fed: Federation) -> None:
        self._pids = {
            "hub": [fed.hub.process.pid] if fed.hub.process else [],
            "nodes": [n.process.pid for n in fed.nodes.values() if n.process],
        }
        self._start = self._read()

    def _read(self) -> dict[str, float | None]:
        totals: dict[str, float | None] = {"researcher": time.process_time()}
        for name, pids in self._pids.items():
            values = [cpu_seconds(pid) for pid in pids]
            totals[name] = None if None in values else sum(v for v in values if v is not None)
        return totals

    def per_task_ms(self, tasks: int) -> dict[str, float | None]:
        end = self._read()
        out: dict[str, float | None] = {}
        for name, before in self._start.items():
            after = end[name]
            if before is None or after is None:
                out[name] = None
            else:
                out[name] = round((after - before) * 1000.0 / tasks, 2)
        return out


def measure(
    fed: Federation, algorithm: str, datasets: Sequence[list[int | str]], **params: Any
) -> tuple[list[Timed], dict[str, float | None]]:
    """Time one task per entry of ``datasets``, one after another; also CPU per task."""
    meter = CpuMeter(fed)
    timed = [timed_task(fed.researcher, algorithm, refs, **params) for refs in datasets]
    return timed, meter.per_task_ms(len(timed))


def summary(timed: Sequence[Timed], legs: dict[str, Stats]) -> dict[str, Any]:
    return {
        "submit_to_completed_ms": asdict(Stats.of([t.latency_ms for t in timed])),
        "legs_ms": {name: asdict(s) for name, s in legs.items()},
    }


class Laps:
    """Wall-clock seconds of each phase (start, measure, stop), for the JSON."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 2)
        self._last = now


def noop_benchmark(
    n_nodes: int, runs: int, heartbeat: float, hub_env: dict[str, str]
) -> dict[str, Any]:
    laps = Laps()
    with workdir() as root:
        with Federation(
            root, number_shares(n_nodes), heartbeat_seconds=heartbeat, hub_env=hub_env
        ) as fed:
            laps.lap("start")
            ids: list[int | str] = [d.id for d in fed.researcher.datasets.list()]
            for dataset_id in ids:  # warm-up: one task per node, not measured
                timed_task(fed.researcher, "noop", [dataset_id])
            timed, cpu = measure(fed, "noop", [[ids[i % len(ids)]] for i in range(runs)])
            laps.lap("measure")
        laps.lap("stop")
        legs = hub_legs(root, timed)
    return {
        "nodes": n_nodes,
        "runs": runs,
        **summary(timed, legs),
        "cpu_ms_per_task": cpu,
        "phases_s": laps.seconds,
    }


def mean_benchmark(tasks: int, heartbeat: float, hub_env: dict[str, str]) -> dict[str, Any]:
    laps = Laps()
    pooled = load_gbsg2()
    shares = split_gbsg2(pooled)
    with workdir() as root:
        with Federation(
            root,
            {name: {"gbsg2": s} for name, s in shares.items()},
            heartbeat_seconds=heartbeat,
            hub_env=hub_env,
        ) as fed:
            laps.lap("start")
            for _ in range(3):  # warm-up
                timed_task(fed.researcher, "mean", ["gbsg2"], columns=MEAN_COLUMNS)
            timed, cpu = measure(fed, "mean", [["gbsg2"]] * tasks, columns=MEAN_COLUMNS)
            last = fed.researcher.tasks.get(timed[-1].task_id)
            result = MeanResult.model_validate(fed.researcher.tasks.result(last).result)
            got = result.columns["age"].mean
            want = float(pooled["age"].mean())
            if got is None or abs(got - want) > 1e-9 * abs(want):
                raise RuntimeError(f"federated mean age {got} differs from the pooled one")
            laps.lap("measure")
        laps.lap("stop")
        legs = hub_legs(root, timed)
    return {
        "nodes": len(shares),
        "tasks": tasks,
        "columns": MEAN_COLUMNS,
        **summary(timed, legs),
        "cpu_ms_per_task": cpu,
        "phases_s": laps.seconds,
    }


def git_commit() -> str | None:
    """The checked-out commit, read from ``.git`` (no git process)."""
    git = Path(__file__).resolve().parent.parent / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "processor": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "git_commit": git_commit(),
    }


def _row(table: Table, name: str, s: dict[str, Any], target: str = "") -> None:
    figures = (f"{s[k]:.1f}" for k in ("p50", "p90", "p99", "mean", "max"))
    table.add_row(name, str(s["n"]), *figures, target)


def _verdict(s: dict[str, Any], target_ms: float) -> str:
    return f"p50 < {target_ms:.0f}: " + ("met" if s["p50"] < target_ms else "MISSED")


def print_table(results: dict[str, Any]) -> None:
    table = Table(title="dispatch latency in ms, submit → task completed (SDK, loopback)")
    table.add_column("measure", no_wrap=True)
    for column in ("n", "p50", "p90", "p99", "mean", "max", "target"):
        table.add_column(column, justify="right", no_wrap=True)
    cpu = Table(title="CPU ms per task (whole processes, idle long polls included)")
    cpu.add_column("measure", no_wrap=True)
    for column in ("researcher", "hub", "nodes"):
        cpu.add_column(column, justify="right")
    entries = [(f"noop, {e['nodes']} node(s)", e, TARGET_DISPATCH_P50_MS) for e in results["noop"]]
    if results.get("mean"):
        entries.append(("mean, 3 nodes (GBSG2)", results["mean"], TARGET_MEAN_TASK_MS))
    for label, entry, target in entries:
        total = entry["submit_to_completed_ms"]
        _row(table, label, total, _verdict(total, target))
        for leg, s in entry["legs_ms"].items():
            _row(table, f"  {leg}", s)
        table.add_section()
        cpu.add_row(
            label,
            *(
                "n/a" if v is None else f"{v:.1f}"
                for v in (entry["cpu_ms_per_task"][k] for k in ("researcher", "hub", "nodes"))
            ),
        )
    console.print(table)
    console.print(cpu)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.dispatch",
        description="Dispatch latency hub → node → hub (noop) and a 3-node mean task.",
    )
    parser.add_argument("--runs", type=int, default=200, help="noop tasks per node count")
    parser.add_argument(
        "--nodes", type=int, nargs="+", default=None, help="node counts (default: 1 10)"
    )
    parser.add_argument("--mean-tasks", type=int, default=50, help="3-node mean tasks")
    parser.add_argument(
        "--heartbeat", type=float, default=5.0, help="node heartbeat seconds (node default 5)"
    )
    parser.add_argument(
        "--hub-env",
        action="append",
        default=[],
        metavar="MEDFED_X=VALUE",
        help="extra hub setting, e.g. MEDFED_RECHECK_SECONDS=2 (repeatable)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short pass: 30 runs on 1 node, 10 mean tasks"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.nodes is None:
        args.nodes = [1] if args.quick else [1, 10]
    if args.quick:
        args.runs = min(args.runs, 30)
        args.mean_tasks = min(args.mean_tasks, 10)
    if any("=" not in item for item in args.hub_env):
        parser.error("--hub-env takes NAME=VALUE")
    if args.runs < 1 or args.mean_tasks < 0 or any(n < 1 or n > 50 for n in args.nodes):
        parser.error("--runs must be >= 1, --mean-tasks >= 0, --nodes between 1 and 50")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # hundreds of tasks in one project: lift the project's query budget (not measured here)
    hub_env = {
        "MEDFED_PROJECT_QUERY_BUDGET": "1000000",
        **dict(item.split("=", 1) for item in args.hub_env),
    }
    started = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "dispatch",
        "command": " ".join([".venv/bin/python -m benchmarks.dispatch", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "settings": {
            "runs": args.runs,
            "nodes": args.nodes,
            "mean_tasks": args.mean_tasks,
            "heartbeat_seconds": args.heartbeat,
            "hub_env": hub_env,
            "quick": args.quick,
        },
        "targets_ms": {"noop_p50": TARGET_DISPATCH_P50_MS, "mean_3_nodes": TARGET_MEAN_TASK_MS},
        "noop": [],
        "mean": None,
    }
    for n_nodes in args.nodes:
        console.print(f"noop: {n_nodes} node(s), {args.runs} runs …")
        results["noop"].append(noop_benchmark(n_nodes, args.runs, args.heartbeat, hub_env))
    if args.mean_tasks:
        console.print(f"mean: 3 nodes, {args.mean_tasks} tasks …")
        results["mean"] = mean_benchmark(args.mean_tasks, args.heartbeat, hub_env)
    results["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    print_table(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.output} ({results['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
