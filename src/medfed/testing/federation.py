"""A whole federation on one machine: a hub process and one process per node.

``Federation(root, shares)`` initializes a hub database, starts ``medfed hub serve``,
creates one organization and one node per hospital, a researcher with a project, writes
each hospital's tables as CSV under its own folder (or uses a given file, such as an
ingest output with its catalogue summary beside it), starts ``medfed node start`` for each
and waits until every dataset is registered; the datasets are released and, with
``grant_access`` (the default), the researcher applies for every dataset and the hub
admin approves, so the project is entitled. Leaving the ``with`` block stops them all.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

import pandas as pd

from medfed.hub.bootstrap import init_hub
from medfed.hub.config import HubSettings
from medfed.sdk.client import Client
from medfed.testing.processes import HubProcess, NodeProcess


@dataclass
class Federation:
    root: Path
    shares: dict[str, dict[str, pd.DataFrame | Path]]
    min_cell_count: int = 5
    database_url: str | None = None
    hub_env: dict[str, str] = field(default_factory=dict)
    heartbeat_seconds: float = 1.0
    grant_access: bool = True
    #: lines added to each node's ``[policy]`` (e.g. ``sole_release = true``)
    extra_policy: str = ""
    #: top-level lines added to each node's ``node.toml``
    node_config: str = ""
    #: dataset → its ``person_column`` at every node (the opt-out register applies)
    person_columns: dict[str, str] = field(default_factory=dict)
    hub: HubProcess = field(init=False)
    nodes: dict[str, NodeProcess] = field(init=False, default_factory=dict)
    admin: Client = field(init=False)
    researcher: Client = field(init=False)
    project_id: int = field(init=False)
    researcher_password: str = field(init=False, default_factory=lambda: secrets.token_urlsafe(12))

    def start(self) -> Federation:
        hub_dir = self.root / "hub"
        settings = HubSettings(data_dir=hub_dir, database_url=self.database_url, dev_mode=True)
        _, token = init_hub(
            settings, organization="Hub", username="admin", password=secrets.token_urlsafe(12)
        )
        self.hub = HubProcess(hub_dir, database_url=self.database_url, env=self.hub_env)
        self.hub.start()
        self.admin = Client(self.hub.url, token)
        institute = self.admin.organizations.create("Research Institute")
        self.admin.users.create(
            "researcher",
            self.researcher_password,
            organization_id=institute.id,
            roles=["researcher"],
        )
        self.researcher = Client.login(self.hub.url, "researcher", self.researcher_password)
        self.project_id = self.researcher.projects.create("demo", "federated analysis").id
        self.researcher.project = self.project_id
        for name, tables in self.shares.items():
            org = self.admin.organizations.create(f"{name} hospital")
            created = self.admin.nodes.create(name, organization_id=org.id)
            folder = self.root / name
            (folder / "data").mkdir(parents=True, exist_ok=True)
            paths = {}
            for dataset, frame in tables.items():
                if isinstance(frame, Path):  # an existing file (e.g. ingest output) as it is
                    paths[dataset] = frame
                    continue
                path = folder / "data" / f"{dataset}.csv"
                frame.to_csv(path, index=False)
                paths[dataset] = path
            node = NodeProcess(
                name,
                folder,
                self.hub.url,
                created.secret,
                paths,
                min_cell_count=self.min_cell_count,
                heartbeat_seconds=self.heartbeat_seconds,
                extra_policy=self.extra_policy,
                extra_config=self.node_config,
                person_columns=self.person_columns,
            )
            node.start()
            self.nodes[name] = node
        self.wait_registered()
        for registered in self.admin.datasets.list():  # nodes register drafts; release them
            if registered.state == "draft":
                self.admin.catalogue.release(registered.id)
        if self.grant_access:
            self.grant_all_access()
        return self

    def grant_all_access(self, days: int = 365) -> None:
        """The researcher applies for every dataset (one application per holding
        organization); the hub admin, acting as DAC, approves with an end date."""
        org_of = {n.id: n.organization_id for n in self.admin.nodes.list()}
        by_org: dict[int, list[int]] = {}
        for dataset in self.admin.datasets.list():
            by_org.setdefault(org_of[dataset.node_id], []).append(dataset.id)
        ends = datetime.now(UTC) + timedelta(days=days - 1)
        for dataset_ids in by_org.values():
            application = self.researcher.access.apply(
                self.project_id,
                dataset_ids,
                purpose="federated analysis",
                ethics_reference="EC-DEMO-1",
                codes=["HMB"],
                duration_days=days,
            )
            self.researcher.access.submit(application.id)
            self.admin.access.approve(application.id, ends)

    def wait_registered(self, timeout: float = 180.0) -> None:
        expected = sum(len(t) for t in self.shares.values())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.admin.datasets.list()) >= expected:  # drafts: authors see them
                return
            for node in self.nodes.values():
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(f"node {node.name} exited; see {node.folder / 'node.log'}")
            time.sleep(0.1)
        raise RuntimeError("nodes did not register their datasets in time")

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        if hasattr(self, "hub"):
            self.hub.stop()

    def __enter__(self) -> Federation:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
