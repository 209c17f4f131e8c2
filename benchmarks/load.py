"""Load with faults (issue 14): many researchers, many nodes, a database outage in the middle.

Run it as ``.venv/bin/python -m benchmarks.load``. Options: ``--nodes 10``, ``--clients 20``,
``--seconds 60``, ``--db sqlite|postgres|both``, ``--workers 1 2``, ``--outage 10``
(seconds; 0 runs only the no-outage cells), ``--quick`` (3 nodes, 4 clients, 15 s, SQLite,
1 worker: about a minute). How it runs, once per cell of databases x hub workers x
(no outage, outage):

1. It starts a :class:`~medfed.testing.federation.Federation` in a temporary folder: a hub
   (``MEDFED_WORKERS`` uvicorn workers; SQLite in the hub's folder, or a fresh PostgreSQL
   database made for the cell and dropped after it) and ``--nodes`` node processes, each
   holding a round-robin share of GBSG2 (686 rows) as the dataset ``gbsg2``. The project's
   query budget is raised through the API, as its DAC would (the default, 200 tasks a day,
   would stop the load after a few seconds); nothing else is changed from the defaults.
2. ``--clients`` threads, each with its own SDK ``Client`` and HTTP connection pool, loop
   for ``--seconds``: ``tasks.submit("count", datasets=["gbsg2"])`` then ``tasks.wait``.
   Every HTTP answer the clients get is recorded by an httpx hook (so 5xx that the SDK
   retried internally are counted too), with the time its request was sent; an exception
   raised by the SDK is a client error, counted by class (after one the client sleeps
   0.5 s and goes on).
3. In an outage cell, a helper thread starts the outage at the middle of the load: SQLite —
   a separate connection holds ``BEGIN EXCLUSIVE`` on ``hub.db``; PostgreSQL — ``ALTER
   DATABASE … ALLOW_CONNECTIONS false`` and ``pg_terminate_backend`` for its sessions; after
   ``--outage`` seconds it is lifted. A 5xx counts as *inside* the outage when its request
   was in flight at any moment of the window, otherwise *outside*.
4. When the load stops, clients stop submitting and finish waiting for their last task; then
   every submitted task is followed for up to ``STUCK_AFTER_S`` (60 s): those still
   ``running`` then are *stuck*. It also checks that every node process is still alive.

tasks/s counts tasks completed while the load ran; latency is submit → ``wait`` returned
(completed tasks only). It prints a table and writes ``benchmarks/results/load.json``.
Everything listens on 127.0.0.1; every process is stopped on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from rich.table import Table

from benchmarks.dispatch import Laps, Stats, console, machine, workdir
from medfed.common.resources import TaskStatus
from medfed.sdk.client import Client
from medfed.testing.demo import load_gbsg2
from medfed.testing.faults import pg_database, pg_outage, sqlite_outage
from medfed.testing.federation import Federation

RESULTS = Path(__file__).resolve().parent / "results" / "load.json"
PG_URL = os.environ.get(
    "MEDFED_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
STUCK_AFTER_S = 60.0
#: the last line of a logged traceback: the exception's class and the start of its message
EXCEPTION = re.compile(r"^([\w.]+(?:Error|Exception|Violation)): (.{0,80})", re.MULTILINE)
QUERY_BUDGET = 1_000_000  # the most the API takes


def shares(n_nodes: int) -> dict[str, dict[str, pd.DataFrame | Path]]:
    """GBSG2 dealt round-robin over ``n_nodes`` hospitals (about 686 / n rows each)."""
    pooled = load_gbsg2()
    return {
        f"hospital-{i:02d}": {"gbsg2": pooled.iloc[i::n_nodes].reset_index(drop=True)}
        for i in range(n_nodes)
    }


@dataclass
class Answer:
    """One HTTP answer a client got: when its request was sent and answered, and status."""

    sent: float
    answered: float
    status: int
    route: str


@dataclass
class Recorder:
    """Everything the client threads saw; one lock for all of them."""

    answers: list[Answer] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, str] = field(default_factory=dict)
    submitted: list[int] = field(default_factory=list)
    completed: list[tuple[float, float]] = field(default_factory=list)  # (ended, latency ms)
    failed: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, url: str, token: str, project: int) -> Client:
        def on_request(request: httpx.Request) -> None:
            request.extensions["bench_sent"] = time.time()

        def on_response(response: httpx.Response) -> None:
            request = response.request
            parts = request.url.path.split("/")
            route = "/".join("{id}" if p.isdigit() else p for p in parts)
            answer = Answer(
                request.extensions.get("bench_sent", time.time()),
                time.time(),
                response.status_code,
                f"{request.method} {route}",
            )
            with self.lock:
                self.answers.append(answer)

        http = httpx.Client(
            base_url=url,
            timeout=30.0,
            limits=httpx.Limits(max_connections=4),
            event_hooks={"request": [on_request], "response": [on_response]},
        )
        return Client(url, token, project=project, http_client=http)

    def error(self, exc: BaseException) -> None:
        kind = type(exc).__name__
        with self.lock:
            self.errors[kind] += 1
            self.error_examples.setdefault(kind, str(exc)[:200])


def researcher_loop(client: Client, rec: Recorder, end: float, stop_waiting: float) -> None:
    """Submit a count task and wait for it until ``end``; the last wait ends by ``stop_waiting``."""
    while time.monotonic() < end:
        started = time.perf_counter()
        try:
            task = client.tasks.submit("count", datasets=["gbsg2"])
        except Exception as exc:
            rec.error(exc)
            time.sleep(0.5)
            continue
        with rec.lock:
            rec.submitted.append(task.id)
        try:
            done = client.tasks.wait(
                task.id, timeout=max(stop_waiting - time.monotonic(), 1.0), progress=False
            )
        except Exception as exc:
            rec.error(exc)
            time.sleep(0.5)
            continue
        latency_ms = (time.perf_counter() - started) * 1000.0
        with rec.lock:
            if done.status == TaskStatus.completed:
                rec.completed.append((time.monotonic(), latency_ms))
            else:
                rec.failed[(done.error or done.status.value)[:120]] += 1


def outage_thread(
    fed: Federation, url: str | None, at: float, seconds: float, window: list[float]
) -> threading.Thread:
    """At monotonic ``at``, hold the outage ``seconds``; ``window`` gets its wall times."""

    def run() -> None:
        time.sleep(max(at - time.monotonic(), 0.0))
        outage = pg_outage(url) if url else sqlite_outage(fed.hub.data_dir / "hub.db")
        with outage:
            window.append(time.time())
            time.sleep(seconds)
            window.append(time.time())

    thread = threading.Thread(target=run, name="outage", daemon=True)
    thread.start()
    return thread


def stuck_tasks(client: Client, task_ids: Sequence[int], timeout: float) -> list[int]:
    """Tasks still ``running`` ``timeout`` seconds from now (followed one by one)."""
    deadline = time.monotonic() + timeout
    open_ids = list(task_ids)
    while open_ids and time.monotonic() < deadline:
        still = []
        for task_id in open_ids:
            try:
                if client.tasks.get(task_id).status == TaskStatus.running:
                    still.append(task_id)
            except Exception:
                still.append(task_id)
        open_ids = still
        if open_ids:
            time.sleep(1.0)
    return open_ids


def cell(
    db: str, workers: int, outage: float, n_nodes: int, n_clients: int, seconds: float
) -> dict[str, Any]:
    laps = Laps()
    with workdir() as root, contextlib.ExitStack() as stack:
        url = stack.enter_context(pg_database(PG_URL, "medfed_load_")) if db == "postgres" else None
        fed = stack.enter_context(
            Federation(
                root,
                shares(n_nodes),
                database_url=url,
                hub_env={"MEDFED_WORKERS": str(workers)},
                heartbeat_seconds=5.0,
            )
        )
        # as the project's DAC would: enough tasks for the load (default 200 a day)
        fed.admin.access.set_budget(fed.project_id, QUERY_BUDGET)
        token = fed.researcher.token
        assert token is not None
        rec = Recorder()
        clients = [rec.client(fed.hub.url, token, fed.project_id) for _ in range(n_clients)]
        fed.researcher.tasks.run("count", datasets=["gbsg2"], progress=False)  # warm-up
        laps.lap("start")
        load_avg_start = round(os.getloadavg()[0], 2)
        begin = time.monotonic()
        end = begin + seconds
        window: list[float] = []
        helper = (
            outage_thread(fed, url, begin + (seconds - outage) / 2, outage, window)
            if outage
            else None
        )
        threads = [
            threading.Thread(target=researcher_loop, args=(c, rec, end, end + STUCK_AFTER_S))
            for c in clients
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if helper is not None:
            helper.join()
        laps.lap("load")
        stuck = stuck_tasks(fed.admin, rec.submitted, STUCK_AFTER_S - (time.monotonic() - end))
        alive = sum(n.process is not None and n.process.poll() is None for n in fed.nodes.values())
        final = Counter(fed.admin.tasks.get(i).status.value for i in rec.submitted)
        for c in clients:
            c.close()
        laps.lap("drain")
        hub_log = (root / "hub" / "hub.log").read_text(errors="replace")
    laps.lap("stop")
    return summarize(
        rec,
        db,
        workers,
        outage,
        window,
        seconds,
        begin,
        end,
        stuck,
        alive,
        n_nodes,
        final,
        hub_log,
        laps.seconds,
        load_avg_start,
    )


def summarize(
    rec: Recorder,
    db: str,
    workers: int,
    outage: float,
    window: list[float],
    seconds: float,
    begin: float,
    end: float,
    stuck: list[int],
    alive: int,
    n_nodes: int,
    final: Counter[str],
    hub_log: str,
    phases: dict[str, float],
    load_avg_start: float,
) -> dict[str, Any]:
    in_load = [lat for ended, lat in rec.completed if begin <= ended <= end]
    start, stop = (window[0], window[1]) if len(window) == 2 else (float("inf"), float("-inf"))
    inside: Counter[str] = Counter()
    outside: Counter[str] = Counter()
    for a in rec.answers:
        if a.status >= 500:
            target = inside if a.sent <= stop and a.answered >= start else outside
            target[f"{a.status} {a.route}"] += 1
    statuses = Counter(a.status for a in rec.answers)
    return {
        "db": db,
        "workers": workers,
        "outage_s": outage,
        "outage_window_s": round(window[1] - window[0], 2) if len(window) == 2 else None,
        "nodes": n_nodes,
        "nodes_alive_at_end": alive,
        "tasks_submitted": len(rec.submitted),
        "tasks_completed_in_load": len(in_load),
        "tasks_completed_total": len(rec.completed),
        "tasks_per_s": round(len(in_load) / seconds, 2),
        "latency_ms": asdict(Stats.of([lat for _, lat in rec.completed])),
        "tasks_failed": dict(rec.failed),
        "final_task_states": dict(final),
        "stuck_tasks": len(stuck),
        "stuck_task_ids": stuck[:20],
        "http_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "http_5xx_inside_outage": dict(inside),
        "http_5xx_outside_outage": dict(outside),
        "client_errors": dict(rec.errors),
        "client_error_examples": rec.error_examples,
        "hub_log_tracebacks": hub_log.count("Traceback"),
        "hub_log_exceptions": dict(
            Counter(": ".join(m) for m in EXCEPTION.findall(hub_log)).most_common(5)
        ),
        "load_average_1m_at_load_start": load_avg_start,
        "phases_s": phases,
    }


def print_table(cells: Sequence[dict[str, Any]]) -> None:
    table = Table(pad_edge=False, title="load: count tasks, latency ms submit → wait returned")
    for column in (
        "db",
        "wk",
        "outage",
        "task/s",
        "p50",
        "p99",
        "fail",
        "stuck",
        "5xx in",
        "5xx out",
        "cl.err",
        "alive",
    ):
        table.add_column(column, justify="right", no_wrap=True)
    for c in cells:
        table.add_row(
            c["db"],
            str(c["workers"]),
            f"{c['outage_s']:g} s" if c["outage_s"] else "-",
            f"{c['tasks_per_s']:.1f}",
            f"{c['latency_ms']['p50']:.0f}",
            f"{c['latency_ms']['p99']:.0f}",
            str(sum(c["tasks_failed"].values())),
            str(c["stuck_tasks"]),
            str(sum(c["http_5xx_inside_outage"].values())),
            str(sum(c["http_5xx_outside_outage"].values())),
            str(sum(c["client_errors"].values())),
            f"{c['nodes_alive_at_end']}/{c['nodes']}",
        )
    console.print(table)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load",
        description="Researchers under load, with and without a database outage (issue 14).",
    )
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--outage", type=float, default=10.0, help="0: no outage cells")
    parser.add_argument(
        "--no-baseline", action="store_true", help="only the outage cells (skip no-outage)"
    )
    parser.add_argument("--quick", action="store_true", help="3 nodes, 4 clients, 15 s, SQLite")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON file to write")
    parser.add_argument(
        "--append", action="store_true", help="add the cells to an existing JSON file"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.nodes, args.clients, args.seconds = 3, 4, 15.0
        args.db, args.workers, args.outage = "sqlite", [1], 4.0
    if args.nodes < 2 or args.clients < 1 or any(w < 1 for w in args.workers):
        parser.error("--nodes must be >= 2 (the hub's min_nodes), --clients and --workers >= 1")
    if args.outage < 0 or args.outage >= args.seconds:
        parser.error("--outage must be >= 0 and shorter than --seconds")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    previous: dict[str, Any] = {}
    if args.append and args.output.exists():
        previous = json.loads(args.output.read_text())
    results: dict[str, Any] = {
        "benchmark": "load",
        "command": " ".join([".venv/bin/python -m benchmarks.load", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "settings": {
            "nodes": args.nodes,
            "clients": args.clients,
            "seconds": args.seconds,
            "outage_s": args.outage,
            "algorithm": "count on GBSG2 dealt round-robin over the nodes",
            "project_query_budget_set_by_dac": QUERY_BUDGET,
            "node_heartbeat_seconds": 5.0,
            "stuck_after_s": STUCK_AFTER_S,
            "hub_settings": "defaults (lease 30 s, sqlite_busy_seconds 10, long poll 25 s)",
        },
        "cells": list(previous.get("cells", [])),
    }
    if previous:
        results["earlier_runs"] = [
            *previous.get("earlier_runs", []),
            {"command": previous.get("command"), "machine": previous.get("machine")},
        ]
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    outages = ([] if args.no_baseline else [0.0]) + ([args.outage] if args.outage else [])
    for db in dbs:
        for workers in args.workers:
            for outage in outages:
                label = f"{db}, {workers} worker(s), outage {outage:g} s"
                console.print(f"{label}: {args.nodes} nodes, {args.clients} clients …")
                try:
                    entry = cell(db, workers, outage, args.nodes, args.clients, args.seconds)
                except Exception as exc:
                    console.print(f"[red]{label} failed[/red]: {exc!r}")
                    entry = {"db": db, "workers": workers, "outage_s": outage, "error": repr(exc)}
                results["cells"].append(entry)
                args.output.parent.mkdir(parents=True, exist_ok=True)
                args.output.write_text(json.dumps(results, indent=2) + "\n")
    results["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    print_table([c for c in results["cells"] if "error" not in c])
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.output} ({results['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
