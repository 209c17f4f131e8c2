"""Many lightweight nodes in one asyncio process, for scale benchmarks (not the product).

How it runs: :class:`Simulator` gets the hub's URL and one real node secret per simulated
node (made by the hub administrator, as for any node). :meth:`Simulator.register` has
each node register one small table as a dataset (``POST /api/node/datasets``, the
columns and rounded row count a node would send). :meth:`Simulator.serve` then runs one
task per node, each with its own ``aiohttp.ClientSession`` (HTTP keep-alive; one client
shared by all would walk every connection on each request: quadratic in the nodes): each
long-polls ``GET /api/node/runs/next``, answers a run with the algorithm's real local step
on the shared table (a :class:`~medfed.node.stores.tables.TableStore`, so DuckDB and the
schema checks are real) passed through the node's disclosure gate
(:func:`medfed.node.gate.apply_gate`, the algorithm's own output rules), and posts the
outcome with ``?next=true`` as the node agent does (a run handed out with the answer is
served before the next poll). ``noop`` runs (dispatch measurements) take the same path
with nothing to gate. What a full node adds and this leaves out: policy checks from
``node.toml``, row-set memory, dominance rules, the airlock, the outbox, heartbeats and
the run log — so its answers are what a node would send for plain aggregate algorithms,
no more.

The nodes speak HTTP through aiohttp, not httpx as the node agent does: the simulator
shares the cores with the hub it measures, and an aiohttp request costs its client about
a quarter of an httpx one's CPU (226 against 782 µs for a ``GET /api/health`` here,
``docs/benchmarks.md`` stop 31); the hub gets the same requests (method, path, bearer,
body); aiohttp comes with ``medfed[dev]`` (tests and benchmarks), the table store with
``medfed[node]``. Every node's client takes the one TLS context the simulator makes (a
context per client is ~40 ms of CPU: 40 s for 1,000 nodes, spent beside the hub being
measured). Each node's first poll asks for no wait (its connection made and its credential checked
once); :attr:`Simulator.polling` is set once every node has had that answer, and
``--ready`` is written then: a benchmark starts measuring with every node connected, not
while they connect.

Every node counts the runs it answered (``answered``); ``python -m
medfed.testing.simulator --hub URL --secrets FILE`` runs it as its own process (one
secret a line), so a benchmark can read the hub's CPU apart from the nodes';
``--register-only`` registers the datasets and exits, so a benchmark can release them
before any poll is open. Each node's poll asks for a wait drawn between half and all of
``poll_wait`` (seeded by its index): polls started together do not all renew together.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pandas as pd

from medfed.algorithms.base import LocalContext
from medfed.algorithms.registry import get_algorithm
from medfed.common.errors import MedfedError
from medfed.common.resources import DatasetRegister, RunAssignment, RunOutcome
from medfed.node.gate import GatePolicy, apply_gate
from medfed.node.stores.tables import TableStore

__all__ = ["Simulator", "default_table"]


def default_table(rows: int = 60) -> pd.DataFrame:
    """A small deterministic table: an integer id, a number and a two-level group."""
    return pd.DataFrame(
        {
            "x": [float((i * 37) % 101) for i in range(rows)],
            "group": ["a" if i % 2 else "b" for i in range(rows)],
        }
    )


@dataclass
class Simulator:
    hub_url: str
    secrets: Sequence[str]
    dataset: str = "sim"
    table: pd.DataFrame = field(default_factory=default_table)
    min_cell_count: int = 5
    poll_wait: float = 20.0
    #: runs answered, per node index
    answered: list[int] = field(init=False)
    errors: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.answered = [0] * len(self.secrets)
        self._store = TableStore(self.table, name=self.dataset)
        self._stop = asyncio.Event()
        #: set once every node has had the answer to its first poll (see module doc)
        self.polling = asyncio.Event()
        self._first_polls = 0
        self._tls = ssl.create_default_context()  # one for every node's client

    def _client(self, connections: int = 0) -> aiohttp.ClientSession:
        """A client of the hub (``connections``: at most that many at once; 0: no bound)."""
        return aiohttp.ClientSession(
            base_url=self.hub_url,
            connector=aiohttp.TCPConnector(limit=connections, ssl=self._tls),
            timeout=aiohttp.ClientTimeout(total=self.poll_wait + 60.0),
        )

    async def register(self, concurrency: int = 16) -> list[int]:
        """Register the dataset at every node; the dataset ids, in node order."""
        body = DatasetRegister(
            name=self.dataset,
            columns=self._store.columns,
            row_count=len(self.table) // self.min_cell_count * self.min_cell_count,
        ).model_dump_json(exclude_none=True)
        gate = asyncio.Semaphore(concurrency)

        async def one(client: aiohttp.ClientSession, secret: str) -> int:
            async with (
                gate,
                client.post(
                    "/api/node/datasets",
                    data=body,
                    headers={
                        "Authorization": f"Bearer {secret}",
                        "Content-Type": "application/json",
                    },
                ) as answer,
            ):
                answer.raise_for_status()
                return int((await answer.json())["id"])

        async with self._client() as client:
            return list(await asyncio.gather(*(one(client, s) for s in self.secrets)))

    def answer(self, run: RunAssignment) -> RunOutcome:
        """The local step on the shared table, through the gate (what a node would send)."""
        started = time.perf_counter()
        alg = get_algorithm(run.algorithm)
        try:
            params = alg.parse_params(run.params)
            ctx = LocalContext(
                data=self._store,
                round=run.round,
                state=run.state,
                min_cell_count=self.min_cell_count,
            )
            gated = apply_gate(
                alg.local(params, ctx),
                alg.disclosure(params),
                GatePolicy(min_cell_count=self.min_cell_count),
            )
        except MedfedError as exc:
            return RunOutcome(lease_id=run.lease_id, status="refused", error=exc.message)
        return RunOutcome(
            lease_id=run.lease_id,
            status="done",
            output_status=gated.status,
            output=gated.payload if gated.status == "ok" else None,
            duration_s=time.perf_counter() - started,
        )

    async def _node(self, index: int) -> None:
        # each node its own client, as each hospital has its own connection: one client
        # shared by 1,000 nodes spends its time walking its pool (O(connections) a request)
        async with self._client(connections=2) as client:
            await self._serve_node(client, index)

    async def _serve_node(self, client: aiohttp.ClientSession, index: int) -> None:
        headers = {"Authorization": f"Bearer {self.secrets[index]}"}
        jitter = random.Random(index)
        first = True
        while not self._stop.is_set():
            try:
                # polls of nodes started together would renew together: spread them out
                wait = 0.0 if first else round(self.poll_wait * jitter.uniform(0.5, 1.0), 2)
                async with client.get(
                    "/api/node/runs/next", params={"wait": str(wait)}, headers=headers
                ) as got:
                    got.raise_for_status()
                    content = await got.read()
                if first:
                    first = False
                    self._first_polls += 1
                    if self._first_polls == len(self.secrets):
                        self.polling.set()
                if got.status == 204:
                    continue
                run: RunAssignment | None = RunAssignment.model_validate_json(content)
                while run is not None:  # as the agent: a run handed out with the answer next
                    outcome = self.answer(run)
                    async with client.post(
                        f"/api/node/runs/{run.run_id}/outcome",
                        params={"next": "true"},
                        data=outcome.model_dump_json(exclude_none=True),
                        headers={**headers, "Content-Type": "application/json"},
                    ) as posted:
                        posted.raise_for_status()
                        handed = (await posted.json()).get("next")
                    self.answered[index] += 1
                    run = RunAssignment.model_validate(handed) if handed else None
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                if self._stop.is_set():
                    return
                self.errors.append(f"node {index}: {type(exc).__name__}: {exc}"[:300])
                await asyncio.sleep(0.5)

    async def serve(self) -> None:
        """Run every node until :meth:`stop`."""
        tasks = [asyncio.create_task(self._node(i)) for i in range(len(self.secrets))]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        self._stop.set()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hub", required=True)
    parser.add_argument("--secrets", type=Path, required=True, help="one node secret a line")
    parser.add_argument("--dataset", default="sim")
    parser.add_argument("--register", action="store_true", help="register the dataset first")
    parser.add_argument(
        "--register-only", action="store_true", help="register the dataset at every node, exit"
    )
    parser.add_argument(
        "--ready", type=Path, help="file written once every node has had its first poll answered"
    )
    parser.add_argument(
        "--poll-wait", type=float, default=20.0, help="seconds each long poll asks to wait"
    )
    args = parser.parse_args(argv)
    secrets = [s for s in args.secrets.read_text().split() if s]

    async def run() -> None:
        sim = Simulator(args.hub, secrets, dataset=args.dataset, poll_wait=args.poll_wait)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, sim.stop)
        if args.register or args.register_only:
            await sim.register()
        if args.register_only:
            return
        serving = asyncio.create_task(sim.serve())
        if args.ready is not None:
            polling = asyncio.create_task(sim.polling.wait())
            await asyncio.wait([serving, polling], return_when=asyncio.FIRST_COMPLETED)
            polling.cancel()
            if sim.polling.is_set():
                args.ready.write_text("ready\n")
        await serving
        if sim.errors:
            print("\n".join(sim.errors[:20]))

    asyncio.run(run())


if __name__ == "__main__":
    main()
