"""Hub scale (issue 18): CPU per run, dispatch latency and throughput with simulated nodes.

Run it as ``.venv/bin/python -m benchmarks.scale`` (options: ``--nodes 1 10 100 1000``,
``--runs 100`` single-node noop tasks per node count, ``--pg URL`` to add the
PostgreSQL throughput part, ``--workers 2``, ``--seconds 20``, ``--before DIR`` to
measure a hub run from another source tree too, e.g. ``git archive`` of an earlier
commit's ``src``: each figure then has its "before" from the same run). How it runs:

1. For each node count N: a fresh hub process (SQLite in a temporary folder, one
   worker; its database made by its own tree), an organization with N nodes made
   through the admin API (real secrets, four calls at a time), a simulator process
   (:mod:`medfed.testing.simulator`, ``--register-only``) that registers a 60-row table
   at every node and exits; the datasets are released and the researcher's project is
   approved for all of them (an application per 200), all with no poll open; then one
   simulator process keeps every node in its long poll (measuring starts once every
   node has polled). With ``--before`` both hubs get such a federation, up at once.
2. ``--runs`` times, one after another, the researcher submits a ``noop`` task on ONE
   dataset (rotating over the nodes) and times submit → completed (the SDK's long poll):
   the dispatch latency. The hub's CPU time (``/proc``, the hub and its worker children)
   over those tasks divided by their count is the hub CPU per run. With ``--before`` the
   two hubs take turns every 10 tasks, so a drift of the shared machine's load falls on
   both alike.
3. One ``noop`` task over all N datasets (each hub in turn): time from submit to
   completed, and the hub's CPU per run within it.
   ``--legs``: the hub CPU of each request a run is made of (submit, claim, answer, an
   answer that claims the next run, an idle poll, the researcher's wait, a task read), one
   kind at a time over one node; with ``--before`` both hubs side by side, in turns.
4. With ``--pg``: a hub with ``--workers`` uvicorn workers on a fresh PostgreSQL
   database (LISTEN/NOTIFY wake-ups between the workers), 100 simulated nodes, and 8
   researcher threads submitting ``noop`` tasks over all 100 datasets for ``--seconds``:
   completed runs per second.

It prints a table and writes ``benchmarks/results/scale.json``. Every process is stopped
on the way out; everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from medfed.hub.bootstrap import init_hub
from medfed.hub.config import HubSettings
from medfed.sdk.client import Client
from medfed.testing.faults import pg_database
from medfed.testing.processes import HubProcess

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
TASK_TIMEOUT_S = 120.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children (uvicorn workers), from ``/proc``."""
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    for each in pids:
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def postgres_cpu() -> float:
    """User + system CPU of every ``postgres`` process on the machine (the server and its
    backends), from ``/proc``."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            text = stat.read_text()
            if text.split("(", 1)[1].split(")", 1)[0] == "postgres":
                fields = text.rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@dataclass
class Setup:
    hub: HubProcess
    simulator: subprocess.Popen[bytes]
    researcher: Client
    datasets: list[int]

    @property
    def hub_cpu(self) -> float:
        assert self.hub.process is not None
        return cpu_seconds(self.hub.process.pid)


def _simulator(hub: HubProcess, root: Path, *flags: str) -> subprocess.Popen[bytes]:
    log = open(root / "simulator.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medfed.testing.simulator",
            "--hub",
            hub.url,
            "--secrets",
            str(root / "secrets"),
            *flags,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _each(work: Any, items: list[Any], threads: int = 4) -> list[Any]:
    """``work`` over ``items`` on a few threads (admin set-up calls), in order."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(work, items))


_INIT = (
    "import sys; from pathlib import Path; from medfed.hub.bootstrap import init_hub; "
    "from medfed.hub.config import HubSettings; "
    "print(init_hub(HubSettings(data_dir=Path(sys.argv[1]), database_url=sys.argv[2] or None, "
    "dev_mode=True), organization='Hub', username='admin', password=sys.argv[3])[1])"
)


def _init(hub_dir: Path, database_url: str | None, hub_src: Path | None) -> str:
    """Create the hub's database (its schema, the administrator); the admin's token.

    With ``hub_src`` the schema is that tree's own (its migrations, in a process run from
    it): a "before" hub runs on the database it would have made."""
    password = secrets.token_urlsafe(12)
    if hub_src is None:
        settings = HubSettings(data_dir=hub_dir, database_url=database_url, dev_mode=True)
        return init_hub(settings, organization="Hub", username="admin", password=password)[1]
    made = subprocess.run(
        [sys.executable, "-c", _INIT, str(hub_dir), database_url or "", password],
        env={**os.environ, "PYTHONPATH": str(hub_src)},
        capture_output=True,
        text=True,
        check=True,
    )
    return made.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def federation(
    root: Path,
    nodes: int,
    *,
    database_url: str | None = None,
    workers: int = 1,
    hub_src: Path | None = None,
    long_poll: float | None = None,
) -> Iterator[Setup]:
    """A hub process and one simulator process serving ``nodes`` nodes, set up for use.

    The set-up runs with no poll open: the nodes are created (admin API, a few threads),
    a first simulator process registers their datasets and exits, the datasets are
    released and the researcher's project approved; only then does the serving simulator
    start. ``hub_src``: run the hub from that source tree (``PYTHONPATH``), e.g. an
    earlier commit's ``src`` for a before/after comparison in one run.
    """
    hub_dir = root / "hub"
    token = _init(hub_dir, database_url, hub_src)
    env = {
        "MEDFED_WORKERS": str(workers),
        "MEDFED_SECRET_KEY": secrets.token_hex(32),
        "MEDFED_MIN_NODES": "1",  # single-dataset dispatch tasks complete
        "MEDFED_PROJECT_QUERY_BUDGET": "1000000",  # the measured tasks, not the budget's
    }
    if hub_src is not None:
        env["PYTHONPATH"] = str(hub_src)
    if long_poll is not None:
        env["MEDFED_LONG_POLL_SECONDS"] = str(long_poll)
    hub = HubProcess(hub_dir, database_url=database_url, env=env)
    hub.start()
    simulator = None
    try:
        admin = Client(hub.url, token)
        org = admin.organizations.create("Simulated hospitals")
        node_secrets = _each(
            lambda i: admin.nodes.create(f"sim{i:04d}", organization_id=org.id).secret,
            list(range(nodes)),
        )
        (root / "secrets").write_text("\n".join(node_secrets) + "\n")
        if _simulator(hub, root, "--register-only").wait() != 0:
            raise RuntimeError(f"simulator could not register; see {root / 'simulator.log'}")
        datasets = [d.id for d in admin.datasets.list()]
        _each(admin.catalogue.release, datasets)
        password = secrets.token_urlsafe(12)
        institute = admin.organizations.create("Research Institute")
        admin.users.create(
            "researcher", password, organization_id=institute.id, roles=["researcher"]
        )
        researcher = Client.login(hub.url, "researcher", password)
        project = researcher.projects.create("scale", "scale benchmark").id
        researcher.project = project
        for first in range(0, len(datasets), 200):  # an application names at most 200
            application = researcher.access.apply(
                project,
                datasets[first : first + 200],
                purpose="benchmark",
                ethics_reference="EC-1",
                codes=["HMB"],
                duration_days=30,
            )
            researcher.access.submit(application.id)
            admin.access.approve(application.id, datetime.now(UTC) + timedelta(days=29))
        ready = root / "ready"
        wait = ["--poll-wait", str(long_poll)] if long_poll is not None else []
        simulator = _simulator(hub, root, "--ready", str(ready), *wait)
        deadline = time.monotonic() + 600
        while not ready.exists():
            if simulator.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"simulator did not start; see {root / 'simulator.log'}")
            time.sleep(0.1)
        yield Setup(hub, simulator, researcher, datasets)
    finally:
        if simulator is not None:
            simulator.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                simulator.wait(30)
            if simulator.poll() is None:
                simulator.kill()
        hub.stop()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_task(client: Client, datasets: list[int], timeout: float = TASK_TIMEOUT_S) -> float:
    started = time.perf_counter()
    # the submission waits for the end (a hub without ?wait answers at once: then /wait)
    done = client.tasks.submit("noop", datasets=list(datasets), wait=min(timeout, 20.0))
    if done.status == "running":
        done = client.tasks.wait(done.id, timeout=timeout, progress=False)
    if done.status != "completed":
        raise RuntimeError(f"task {done.id} ended {done.status}: {done.error}")
    return time.perf_counter() - started


def measure_nodes(
    root: Path,
    nodes: int,
    runs: int,
    hub_srcs: list[Path | None],
    fan_timeout: float = 600.0,
    long_poll: float | None = None,
    block: int = 10,
) -> list[dict[str, Any]]:
    """One row per hub tree in ``hub_srcs`` (None: this tree), all measured side by side.

    Every hub has its own federation of ``nodes`` simulated nodes, all up at once; the
    single-dataset tasks run in blocks of ``block``, the hubs taking turns, so a drift of
    the machine's load (a shared machine's neighbours) falls on all of them alike. Then
    one task over all nodes per hub, in turn."""
    with contextlib.ExitStack() as stack:
        setups = [
            stack.enter_context(
                federation(root / f"hub{i}", nodes, hub_src=src, long_poll=long_poll)
            )
            for i, src in enumerate(hub_srcs)
        ]
        latencies: list[list[float]] = [[] for _ in setups]
        cpu = [0.0 for _ in setups]
        for setup in setups:
            run_task(setup.researcher, setup.datasets[:1])  # warm-up
        for first in range(0, runs, block):
            for i, setup in enumerate(setups):
                client, datasets = setup.researcher, setup.datasets
                cpu0 = setup.hub_cpu
                latencies[i] += [
                    run_task(client, [datasets[k % nodes]])
                    for k in range(first, min(first + block, runs))
                ]
                cpu[i] += setup.hub_cpu - cpu0
        rows = []
        for i, (setup, src) in enumerate(zip(setups, hub_srcs, strict=True)):
            cpu0 = setup.hub_cpu
            failed: str | None = None
            try:
                fan_out: float | None = run_task(
                    setup.researcher, setup.datasets, timeout=fan_timeout
                )
            except Exception as exc:  # the dispatch figures above still stand
                fan_out, failed = None, f"{type(exc).__name__}: {exc}"
            cpu_fan = (setup.hub_cpu - cpu0) / nodes
            ms = [x * 1000 for x in latencies[i]]
            rows.append(
                {
                    "all_nodes_error": failed,
                    "hub": "before" if src is not None else "after",
                    "long_poll_s": long_poll,
                    "nodes": nodes,
                    "runs": runs,
                    "dispatch_p50_ms": statistics.median(ms),
                    "dispatch_p99_ms": percentile(ms, 0.99),
                    "hub_cpu_ms_per_run": cpu[i] / runs * 1000,
                    "all_nodes_task_s": fan_out,
                    "all_nodes_hub_cpu_ms_per_run": cpu_fan * 1000,
                }
            )
    return rows


def measure_throughput(
    root: Path, url: str, workers: int, seconds: float, hub_src: Path | None = None
) -> dict[str, Any]:
    nodes = 100
    with (
        pg_database(url, "medfed_scale_") as db,
        federation(root, nodes, database_url=db, workers=workers, hub_src=hub_src) as setup,
    ):
        run_task(setup.researcher, setup.datasets)  # warm-up
        done = [0]
        lock = threading.Lock()
        stop = time.monotonic() + seconds
        token = setup.researcher.token

        def researcher() -> None:
            client = Client(setup.hub.url, token)
            client.project = setup.researcher.project
            while time.monotonic() < stop:
                run_task(client, setup.datasets)
                with lock:
                    done[0] += nodes

        simulator = setup.simulator.pid
        cpu0, started = setup.hub_cpu, time.perf_counter()
        others0 = (cpu_seconds(simulator), postgres_cpu(), time.process_time())
        threads = [threading.Thread(target=researcher) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        cpu = setup.hub_cpu - cpu0
        others = (cpu_seconds(simulator), postgres_cpu(), time.process_time())
    spent = [(b - a) / done[0] * 1000 for a, b in zip(others0, others, strict=True)]
    return {
        "hub": "before" if hub_src is not None else "after",
        "workers": workers,
        "nodes": nodes,
        "runs": done[0],
        "seconds": elapsed,
        "runs_per_s": done[0] / elapsed,
        "hub_cpu_ms_per_run": cpu / done[0] * 1000,
        # the rest of the machine's CPU per run: the simulated nodes, the database, the
        # researchers (this process's threads)
        "simulator_cpu_ms_per_run": spent[0],
        "postgres_cpu_ms_per_run": spent[1],
        "researchers_cpu_ms_per_run": spent[2],
    }


class _Legs:
    """One hub's side of :func:`measure_legs`: its federation of one node (simulator
    stopped), a node client and a researcher client, and what each leg hands the next."""

    answer = {"status": "done", "output_status": "ok", "output": {}}
    poll = "/api/node/runs/next"

    def __init__(self, setup: Setup, secret: str) -> None:
        assert setup.researcher._http.token is not None
        self.setup = setup
        self.node = httpx.Client(
            base_url=setup.hub.url, headers={"Authorization": f"Bearer {secret}"}
        )
        self.user = httpx.Client(
            base_url=setup.hub.url,
            headers={"Authorization": f"Bearer {setup.researcher._http.token}"},
        )
        self.made: list[int] = []
        self.runs: list[dict[str, Any]] = []
        self.handed: list[dict[str, Any]] = []
        self.cpu: dict[str, float] = {}

    @property
    def pid(self) -> int:
        assert self.setup.hub.process is not None
        return self.setup.hub.process.pid

    def drain(self) -> None:
        """Answer, unmeasured, every run still waiting for the node."""
        while (left := self.node.get(self.poll, params={"wait": 0})).status_code == 200:
            run = left.json()
            self.node.post(
                f"/api/node/runs/{run['run_id']}/outcome",
                json={**self.answer, "lease_id": run["lease_id"]},
            ).raise_for_status()

    def step(self, leg: str, i: int) -> None:
        """The ``i``-th request of kind ``leg``."""
        node, user, setup = self.node, self.user, self.setup
        if leg == "create":
            self.made.append(setup.researcher.tasks.submit("noop", datasets=setup.datasets[:1]).id)
        elif leg == "claim":
            self.runs.append(node.get(self.poll, params={"wait": 0}).json())
        elif leg == "answer":
            run = self.runs[i]
            node.post(
                f"/api/node/runs/{run['run_id']}/outcome",
                json={**self.answer, "lease_id": run["lease_id"]},
            ).raise_for_status()
        elif leg == "answer_next":  # an answer that also claims the next run (?next=true)
            run = self.handed[i]
            posted = node.post(
                f"/api/node/runs/{run['run_id']}/outcome",
                params={"next": "true"},
                json={**self.answer, "lease_id": run["lease_id"]},
            ).raise_for_status()
            if "next" not in posted.json():
                raise LookupError("this hub hands no run over with an answer")
            self.handed.append(posted.json()["next"])
        elif leg == "idle_poll":
            node.get(self.poll, params={"wait": 0})
        elif leg == "wait":
            user.get(
                f"/api/tasks/{self.made[i]}/wait", params={"timeout": 1, "progress": "false"}
            ).raise_for_status()
        elif leg == "read_task":
            user.get(f"/api/tasks/{self.made[i]}").raise_for_status()
        else:
            raise ValueError(f"no such leg: {leg}")

    def prepare(self, leg: str, requests: int) -> None:
        """What a leg needs before it is measured (unmeasured requests)."""
        if leg == "create":
            self.drain()  # nothing left from the set-up
        elif leg == "answer_next":  # a second set of tasks, one run handed over by each answer
            for _ in range(requests):
                self.setup.researcher.tasks.submit("noop", datasets=self.setup.datasets[:1])
            self.handed = [self.node.get(self.poll, params={"wait": 0}).json()]
        elif leg == "idle_poll":
            self.drain()  # what an older hub did not hand over with its answers


LEGS = ("create", "claim", "answer", "answer_next", "idle_poll", "wait", "read_task")


def measure_legs(
    root: Path, hub_srcs: list[Path | None], requests: int = 100, block: int = 20
) -> list[dict[str, float]]:
    """Hub CPU per request of each request a dispatched run is made of, one kind at a time,
    for each hub tree in ``hub_srcs`` side by side (blocks of ``block``, in turns).

    Each hub gets one node, its simulator stopped; then ``requests`` times each: the
    researcher submits a ``noop`` task; the node claims (``wait=0``); the node answers;
    an answer that claims the next run too (``?next=true``, a busy node's one request per
    run; left out for a hub without it); the node polls with nothing to do; the
    researcher's wait (``progress=false``) on a finished task; the researcher reads the
    task."""
    with contextlib.ExitStack() as stack:
        sides = []
        for i, src in enumerate(hub_srcs):
            where = root / f"hub{i}"
            setup = stack.enter_context(federation(where, 1, hub_src=src))
            setup.simulator.terminate()
            setup.simulator.wait(30)
            side = _Legs(setup, (where / "secrets").read_text().split()[0])
            stack.callback(side.node.close)
            stack.callback(side.user.close)
            sides.append(side)
        for leg in LEGS:
            for side in sides:
                side.prepare(leg, requests)
            lacking: set[int] = set()  # an older hub without this kind of request
            for first in range(0, requests, block):
                for n, side in enumerate(sides):
                    if n in lacking:
                        continue
                    cpu0 = cpu_seconds(side.pid)
                    try:
                        for i in range(first, min(first + block, requests)):
                            side.step(leg, i)
                    except LookupError:
                        lacking.add(n)
                        side.cpu.pop(leg, None)
                        continue
                    side.cpu[leg] = side.cpu.get(leg, 0.0) + cpu_seconds(side.pid) - cpu0
    return [{leg: cpu / requests * 1000 for leg, cpu in side.cpu.items()} for side in sides]


def measure_floor(root: Path, requests: int = 300) -> dict[str, float]:
    """Hub CPU per request of an empty route and of an authenticated read (the stack's
    floor under any run: HTTP, middlewares, a bearer check), over one keep-alive client."""
    hub_dir = root / "hub"
    settings = HubSettings(data_dir=hub_dir, dev_mode=True)
    _, token = init_hub(
        settings, organization="Hub", username="admin", password=secrets.token_urlsafe(12)
    )
    hub = HubProcess(hub_dir, env={"MEDFED_SECRET_KEY": secrets.token_hex(32)})
    hub.start()
    floor: dict[str, float] = {}
    try:
        assert hub.process is not None
        with httpx.Client(base_url=hub.url) as client:
            for name, path, headers in (
                ("empty_route_ms", "/api/health", {}),
                ("authenticated_read_ms", "/api/me", {"Authorization": f"Bearer {token}"}),
            ):
                for _ in range(20):
                    client.get(path, headers=headers).raise_for_status()
                cpu0 = cpu_seconds(hub.process.pid)
                for _ in range(requests):
                    client.get(path, headers=headers).raise_for_status()
                floor[name] = (cpu_seconds(hub.process.pid) - cpu0) / requests * 1000
    finally:
        hub.stop()
    return floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="*", default=[1, 10, 100, 1000])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--pg", default=os.environ.get("MEDFED_TEST_DATABASE_URL"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument(
        "--long-poll",
        type=float,
        help="the hub's MEDFED_LONG_POLL_SECONDS and the nodes' poll wait (at most 120): "
        "1,000 idle nodes renew their polls 1,000/wait times a second",
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="also measure a hub run from this source tree (e.g. `git archive` of an earlier "
        "commit's src), each figure next to today's in the same run",
    )
    parser.add_argument(
        "--floor", action="store_true", help="also measure the hub CPU of an empty request"
    )
    parser.add_argument(
        "--legs",
        action="store_true",
        help="also measure the hub CPU of each request kind of a run (create, claim, answer, "
        "idle poll, wait, read), with --before next to today's",
    )
    args = parser.parse_args()
    variants: list[Path | None] = [args.before, None] if args.before else [None]
    rows = []
    throughput = []
    with tempfile.TemporaryDirectory(prefix="medfed-scale-") as tmp:
        for n in args.nodes:
            try:
                side_by_side = measure_nodes(
                    Path(tmp) / f"n{n}", n, args.runs, variants, long_poll=args.long_poll
                )
            except Exception as exc:  # a figure that could not be taken is a finding
                rows.append({"nodes": n, "error": f"{type(exc).__name__}: {exc}"})
                print(f"{n:>5} nodes: FAILED {exc}", flush=True)
                continue
            for row in side_by_side:
                rows.append(row)
                print(
                    f"{n:>5} nodes ({row['hub']}): dispatch p50 {row['dispatch_p50_ms']:.1f} ms, "
                    f"p99 {row['dispatch_p99_ms']:.1f} ms, hub CPU "
                    f"{row['hub_cpu_ms_per_run']:.2f} ms/run; task over all {n}: "
                    + (
                        f"{row['all_nodes_task_s']:.2f} s, "
                        f"{row['all_nodes_hub_cpu_ms_per_run']:.2f} ms CPU/run"
                        if row["all_nodes_error"] is None
                        else f"FAILED {row['all_nodes_error']}"
                    ),
                    flush=True,
                )
        floor = measure_floor(Path(tmp) / "floor") if args.floor else None
        if floor is not None:
            print(
                f"floor: empty route {floor['empty_route_ms']:.2f} ms, authenticated read "
                f"{floor['authenticated_read_ms']:.2f} ms of hub CPU per request",
                flush=True,
            )
        legs = {}
        if args.legs:
            got_legs = measure_legs(Path(tmp) / "legs", variants)
            for hub_src, measured in zip(variants, got_legs, strict=True):
                name = "before" if hub_src is not None else "after"
                legs[name] = measured
                shown = ", ".join(f"{k} {v:.1f}" for k, v in measured.items())
                print(f"legs ({name}), hub CPU ms per request: {shown}", flush=True)
        if args.pg and not args.no_pg:
            for hub_src in variants:
                name = "before" if hub_src is not None else "after"
                got = measure_throughput(
                    Path(tmp) / f"pg{name}", args.pg, args.workers, args.seconds, hub_src
                )
                throughput.append(got)
                print(
                    f"PostgreSQL ({name}), {args.workers} workers, 100 nodes: "
                    f"{got['runs_per_s']:.0f} runs/s ({got['runs']} runs in "
                    f"{got['seconds']:.1f} s), CPU ms/run: hub {got['hub_cpu_ms_per_run']:.2f}, "
                    f"simulator {got['simulator_cpu_ms_per_run']:.2f}, PostgreSQL "
                    f"{got['postgres_cpu_ms_per_run']:.2f}, researchers "
                    f"{got['researchers_cpu_ms_per_run']:.2f}",
                    flush=True,
                )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(),
                "cpus": os.cpu_count(),
                "loadavg": os.getloadavg(),
                "nodes": rows,
                "throughput": throughput,
                "floor": floor,
                "legs": legs,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
