"""``medfed.Client``: the researcher's and administrator's Python entry point to a hub.

Every method returns typed objects (pydantic models from ``medfed.common.resources`` or
an algorithm's ``Result``), never bare dicts. ``client.tasks.run(...)`` submits a task,
follows it with the hub's long poll (showing a progress bar on a terminal), and returns
a :class:`~medfed.sdk.results.TaskResult`.
"""

from __future__ import annotations

import builtins
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import BaseModel

from medfed.common.errors import BadRequest
from medfed.common.filter_text import parse_filter_text
from medfed.common.filters import Filter, filter_to_json
from medfed.common.resources import (
    DatasetPublic,
    Health,
    NodeCreated,
    NodePublic,
    NodeRunStatus,
    OrganizationPublic,
    ProjectPublic,
    Role,
    TaskPublic,
    TaskStatus,
    TokenCreated,
    TokenPublic,
    UserPublic,
    progress_mark,
)
from medfed.common.sso_resources import DeviceLoginStarted
from medfed.sdk import sso
from medfed.sdk.access import Access
from medfed.sdk.audit import Ledger
from medfed.sdk.catalogue import Catalogue
from medfed.sdk.cohorts import Cohorts
from medfed.sdk.http import HubBusy, HubHTTP, HubUnreachable
from medfed.sdk.learning import Learning
from medfed.sdk.mfa import Mfa, Visas
from medfed.sdk.results import TaskFailed, TaskResult, TaskTimeout
from medfed.sdk.validation import Validation


class _Resource:
    def __init__(self, http: HubHTTP) -> None:
        self._http = http


class Organizations(_Resource):
    def create(self, name: str) -> OrganizationPublic:
        data = self._http.request("POST", "/api/organizations", json={"name": name})
        return OrganizationPublic.model_validate(data)

    def list(self) -> list[OrganizationPublic]:
        return [
            OrganizationPublic.model_validate(o)
            for o in self._http.request("GET", "/api/organizations")
        ]


class Users(_Resource):
    def create(
        self,
        username: str,
        password: str,
        *,
        organization_id: int,
        roles: list[Role | str] | None = None,
        email: str | None = None,
    ) -> UserPublic:
        body = {
            "username": username,
            "password": password,
            "organization_id": organization_id,
            "roles": [str(r) for r in (roles or ["researcher"])],
            "email": email,
        }
        return UserPublic.model_validate(self._http.request("POST", "/api/users", json=body))

    def list(self) -> list[UserPublic]:
        return [UserPublic.model_validate(u) for u in self._http.request("GET", "/api/users")]

    def me(self) -> UserPublic:
        return UserPublic.model_validate(self._http.request("GET", "/api/me"))


class Tokens(_Resource):
    def create(self, name: str = "api", days: int = 30) -> TokenCreated:
        data = self._http.request("POST", "/api/tokens", json={"name": name, "days": days})
        return TokenCreated.model_validate(data)

    def list(self) -> list[TokenPublic]:
        return [TokenPublic.model_validate(t) for t in self._http.request("GET", "/api/tokens")]

    def revoke(self, token_id: int) -> TokenPublic:
        return TokenPublic.model_validate(self._http.request("DELETE", f"/api/tokens/{token_id}"))


class Projects(_Resource):
    def create(self, name: str, description: str = "") -> ProjectPublic:
        body = {"name": name, "description": description}
        return ProjectPublic.model_validate(self._http.request("POST", "/api/projects", json=body))

    def list(self) -> list[ProjectPublic]:
        return [ProjectPublic.model_validate(p) for p in self._http.request("GET", "/api/projects")]

    def get(self, project_id: int) -> ProjectPublic:
        return ProjectPublic.model_validate(
            self._http.request("GET", f"/api/projects/{project_id}")
        )

    def add_member(self, project_id: int, user_id: int) -> ProjectPublic:
        data = self._http.request(
            "POST", f"/api/projects/{project_id}/members", json={"user_id": user_id}
        )
        return ProjectPublic.model_validate(data)


class Nodes(_Resource):
    def create(self, name: str, *, organization_id: int) -> NodeCreated:
        body = {"name": name, "organization_id": organization_id}
        return NodeCreated.model_validate(self._http.request("POST", "/api/nodes", json=body))

    def list(self) -> list[NodePublic]:
        return [NodePublic.model_validate(n) for n in self._http.request("GET", "/api/nodes")]


class Datasets(_Resource):
    def list(self, node_id: int | None = None) -> list[DatasetPublic]:
        params = {"node_id": node_id} if node_id is not None else None
        data = self._http.request("GET", "/api/datasets", params=params)
        return [DatasetPublic.model_validate(d) for d in data]

    def get(self, dataset_id: int) -> DatasetPublic:
        return DatasetPublic.model_validate(
            self._http.request("GET", f"/api/datasets/{dataset_id}")
        )


class Tasks(_Resource):
    def __init__(self, http: HubHTTP, client: Client) -> None:
        super().__init__(http)
        self._client = client

    def submit(
        self,
        algorithm: str,
        *,
        datasets: list[int | str],
        project: int | None = None,
        where: Filter | dict[str, Any] | str | None = None,
        idempotency_key: str | None = None,
        wait: float = 0.0,
        **params: Any,
    ) -> TaskPublic:
        """Create a task; ``where`` is a filter (JSON form, model, or text like ``age > 50``).

        The request carries an ``Idempotency-Key`` (``idempotency_key``, else a new random
        one per call) and is retried with it while the hub cannot be reached or answers 503
        (up to the client's ``retry_seconds``): the hub creates the task once, however
        many of the tries reached it, and answers the others with that task.

        ``wait`` (seconds, at most 60): the hub may hold its answer until the task ends, so a
        short task comes back ended, with its result, in this one request; one still
        running after ``wait`` (or a repeat answered from its key) comes back running, to
        be followed with :meth:`wait`.
        """
        if where is not None:
            params["where"] = _filter_json(where)
        body = {
            "project_id": project if project is not None else self._client.default_project(),
            "algorithm": algorithm,
            "datasets": datasets,
            "params": params,
        }
        key = idempotency_key if idempotency_key is not None else uuid.uuid4().hex
        held = min(wait, 60.0)
        data = self._http.request(
            "POST",
            "/api/tasks",
            json=body,
            idempotency_key=key,
            params={"wait": held} if held > 0 else None,
            timeout=held + 10 if held > 0 else None,
        )
        return TaskPublic.model_validate(data)

    def get(self, task_id: int) -> TaskPublic:
        return TaskPublic.model_validate(self._http.request("GET", f"/api/tasks/{task_id}"))

    def runs(self, task_id: int) -> list[NodeRunStatus]:
        """Every run of every round with its output status (the hub administrator only)."""
        data = self._http.request("GET", f"/api/tasks/{task_id}/runs")
        return [NodeRunStatus.model_validate(r) for r in data]

    def list(self, project: int | None = None) -> list[TaskPublic]:
        project_id = project if project is not None else self._client.default_project()
        data = self._http.request("GET", "/api/tasks", params={"project_id": project_id})
        return [TaskPublic.model_validate(t) for t in data]

    def wait(
        self, task_id: int, *, timeout: float = 600.0, progress: bool | None = None
    ) -> TaskPublic:
        """Follow the task with the hub's long poll until it ends (or ``timeout``)."""
        show = sys.stderr.isatty() if progress is None else progress
        deadline = time.monotonic() + timeout
        seen = -1
        bar = _Progress(task_id) if show else None
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TaskTimeout(f"task {task_id} did not finish within {timeout:.0f} s")
                try:
                    data = self._http.request(
                        "GET",
                        f"/api/tasks/{task_id}/wait",
                        params={
                            "timeout": min(remaining, 20.0),
                            "seen_runs_done": seen,
                            # without a progress bar only the end is worth an answer
                            "progress": "true" if show else "false",
                        },
                        timeout=min(remaining, 20.0) + 10,
                    )
                except HubUnreachable as exc:  # a restarting hub or a database outage (503):
                    # keep following until the deadline, as often as the hub asks
                    wait = exc.retry_after if isinstance(exc, HubBusy) else None
                    time.sleep(min(wait or 0.5, 5.0, max(remaining, 0)))
                    continue
                task = TaskPublic.model_validate(data)
                seen = progress_mark(task)
                if bar is not None:
                    bar.update(task)
                if task.status != TaskStatus.running:
                    return task
        finally:
            if bar is not None:
                bar.close()

    def result(self, task: TaskPublic) -> TaskResult[BaseModel]:
        if task.status == TaskStatus.failed:
            raise TaskFailed(task)
        if task.status != TaskStatus.completed or task.result is None:
            raise BadRequest(f"task {task.id} has not finished")
        # imported here: the registry loads every algorithm (scipy, pandas); a client that
        # only lists datasets or verifies the log should not pay for that at import
        from medfed.algorithms.registry import get_algorithm

        model = get_algorithm(task.algorithm).Result.model_validate(task.result)
        last_round = max((r.round for r in task.runs), default=0)
        return TaskResult(
            task_id=task.id,
            algorithm=task.algorithm,
            result=model,
            nodes=[r for r in task.runs if r.round == last_round],
            rounds=task.round + 1,
            contributing_nodes=task.contributing_nodes,
            withheld_nodes=task.withheld_nodes,
        )

    def run(
        self,
        algorithm: str,
        *,
        datasets: builtins.list[int | str],
        project: int | None = None,
        where: Filter | dict[str, Any] | str | None = None,
        timeout: float = 600.0,
        progress: bool | None = None,
        **params: Any,
    ) -> TaskResult[Any]:
        """Submit, wait, and return the pooled result with each node's status.

        Without a progress bar the submission itself waits (up to 20 s of ``timeout``): a
        short task is answered in one request."""
        show = sys.stderr.isatty() if progress is None else progress
        started = time.monotonic()
        task = self.submit(
            algorithm,
            datasets=datasets,
            project=project,
            where=where,
            wait=0.0 if show else min(timeout, 20.0),
            **params,
        )
        if task.status == TaskStatus.running:
            left = timeout - (time.monotonic() - started)
            if left <= 0:
                raise TaskTimeout(f"task {task.id} did not finish within {timeout:.0f} s")
            task = self.wait(task.id, timeout=left, progress=show)
        return self.result(task)


def _filter_json(where: Filter | dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(where, str):
        return filter_to_json(parse_filter_text(where))
    if isinstance(where, dict):
        return where
    return filter_to_json(where)


class _Progress:
    """A Rich progress bar over the runs of a task (stderr, only on a terminal)."""

    def __init__(self, task_id: int) -> None:
        from rich.progress import Progress

        self._progress = Progress(transient=True)
        self._progress.start()
        self._bar = self._progress.add_task(f"task {task_id}", total=None)

    def update(self, task: TaskPublic) -> None:
        done = sum(1 for r in task.runs if r.status not in ("pending", "claimed"))
        self._progress.update(
            self._bar,
            total=len(task.runs),
            completed=done,
            description=f"task {task.id} round {task.round} ({task.status.value})",
        )

    def close(self) -> None:
        self._progress.stop()


class Client:
    """A connection to a hub as one user.

    ``Client(url, token)`` with an API token, or ``Client.login(url, username, password)``.
    ``project`` sets the default project for tasks; without it, a user who belongs to
    exactly one project uses that one. ``retry_seconds``: how long a task submission is
    retried (with its ``Idempotency-Key``) while the hub is down or answers 503.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        project: int | None = None,
        http_client: httpx.Client | None = None,
        timeout: float = 30.0,
        retry_seconds: float = 60.0,
    ) -> None:
        # idempotent requests ride out a hub restart or a short database outage; task
        # submissions (an Idempotency-Key each) are retried for up to retry_seconds
        self._http = HubHTTP(
            url,
            token,
            http_client=http_client,
            timeout=timeout,
            retries=4,
            retry_seconds=retry_seconds,
        )
        self.project = project
        self.organizations = Organizations(self._http)
        self.users = Users(self._http)
        self.tokens = Tokens(self._http)
        self.projects = Projects(self._http)
        self.nodes = Nodes(self._http)
        self.datasets = Datasets(self._http)
        self.tasks = Tasks(self._http, self)
        self.ledger = Ledger(self._http)
        self.catalogue = Catalogue(self._http)
        self.access = Access(self._http)
        self.learning = Learning(self._http, self)
        self.cohorts = Cohorts(self._http, self)
        self.mfa = Mfa(self._http)
        self.visas = Visas(self._http)
        self.validation = Validation(self._http, self)

    @classmethod
    def login(
        cls,
        url: str,
        username: str,
        password: str,
        *,
        otp: str | None = None,
        recovery_code: str | None = None,
        http_client: httpx.Client | None = None,
    ) -> Client:
        """Log in by password; an account with TOTP also gives ``otp`` or ``recovery_code``."""
        client = cls(url, http_client=http_client)
        body: dict[str, str] = {"username": username, "password": password}
        if otp:
            body["otp"] = otp
        if recovery_code:
            body["recovery_code"] = recovery_code
        data = client._http.request("POST", "/api/auth/login", json=body)
        client._http.token = TokenCreated.model_validate(data).token
        return client

    @classmethod
    def login_sso(
        cls,
        url: str,
        provider: str | None = None,
        *,
        show: Callable[[DeviceLoginStarted], None] | None = None,
        timeout: float = 900.0,
        http_client: httpx.Client | None = None,
    ) -> Client:
        """Sign in through the hub's OpenID provider (device grant; see :mod:`medfed.sdk.sso`).

        ``show`` gets the user code and URL (default: printed); returns once approved.
        """
        client = cls(url, http_client=http_client)
        client._http.token = sso.device_login(
            client._http, provider=provider, show=show, timeout=timeout
        )
        return client

    @property
    def token(self) -> str | None:
        return self._http.token

    def health(self) -> Health:
        return Health.model_validate(self._http.request("GET", "/api/health"))

    def default_project(self) -> int:
        if self.project is not None:
            return self.project
        projects = self.projects.list()
        if len(projects) != 1:
            raise BadRequest(f"you belong to {len(projects)} projects; name one with project=ID")
        return projects[0].id

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
