"""``medfed.Client`` over the TestClient: typed return values, and the hub's errors as
:mod:`medfed.common.errors` classes carrying the hub's own message."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest

from hubtools import (
    PASSWORD,
    SQLITE_ONLY,
    NodeInfo,
    Person,
    TestClient,
    World,
    done,
    mean_output,
    nodes_answering,
)
from medfed import Client
from medfed.algorithms.stats.moments import MeanResult, MeanStats
from medfed.common.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
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
)
from medfed.common.schemas import ColumnSchema, ColumnType
from medfed.sdk.results import TaskFailed, TaskResult

URL = "http://testserver"

# The SDK passes a per-request timeout for its long polls; the TestClient ignores it.
pytestmark = [
    SQLITE_ONLY,  # the SDK's mapping of the hub's answers does not depend on the backend
    pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument"),
]


def sdk(world: World, person: Person | None = None, token: str | None = None) -> Client:
    return Client(url=URL, token=token or (person or world.researcher).token, http_client=world.api)


def answer_all(world: World, node: NodeInfo, output: dict[str, object]) -> None:
    while (assignment := world.claim(node)) is not None:
        response = world.post_outcome(node, assignment["run_id"], done(assignment, output))
        assert response.status_code == 200, response.text


def test_account_and_catalogue_calls_return_typed_models(world: World) -> None:
    admin = sdk(world, world.admin)
    assert isinstance(admin.health(), Health)
    me = admin.users.me()
    assert isinstance(me, UserPublic) and me.is_superuser and me.roles == [Role.admin]
    assert isinstance(me.created_at, datetime) and me.created_at.tzinfo is not None

    orgs = admin.organizations.list()
    assert [o.name for o in orgs] == ["Org A", "Org B"]
    assert all(isinstance(o, OrganizationPublic) for o in orgs)
    created = admin.organizations.create("Org C")
    assert isinstance(created, OrganizationPublic) and created.name == "Org C"

    user = admin.users.create("nina", "nina-password", organization_id=created.id, roles=["dac"])
    assert isinstance(user, UserPublic) and user.roles == [Role.dac]
    assert all(isinstance(u, UserPublic) for u in admin.users.list())

    node = admin.nodes.create("node-c", organization_id=created.id)
    assert isinstance(node, NodeCreated) and node.secret.startswith("mfn_")
    nodes = admin.nodes.list()
    assert [n.name for n in nodes] == ["node-a", "node-b", "node-c"]
    assert all(isinstance(n, NodePublic) for n in nodes)

    datasets = admin.datasets.list()
    assert [(d.node_name, d.name) for d in datasets] == [("node-a", "cohort"), ("node-b", "cohort")]
    assert all(isinstance(d, DatasetPublic) for d in datasets)
    one = admin.datasets.get(world.node_b.dataset_id)
    assert isinstance(one, DatasetPublic) and one.node_id == world.node_b.id
    assert all(isinstance(c, ColumnSchema) for c in one.columns)
    assert one.columns[0].type is ColumnType.integer
    assert [d.id for d in admin.datasets.list(node_id=world.node_a.id)] == [world.node_a.dataset_id]

    token = admin.tokens.create("ci", days=2)
    assert isinstance(token, TokenCreated) and token.token.startswith("mfu_")
    assert all(isinstance(t, TokenPublic) for t in admin.tokens.list())
    revoked = admin.tokens.revoke(token.id)
    assert isinstance(revoked, TokenPublic) and isinstance(revoked.revoked_at, datetime)


def test_project_calls_return_typed_models(world: World) -> None:
    rita = sdk(world)
    (project,) = rita.projects.list()
    assert isinstance(project, ProjectPublic) and project.members == [world.researcher.id]
    assert rita.projects.get(world.project_id) == project
    added = rita.projects.add_member(world.project_id, world.outsider.id)
    assert isinstance(added, ProjectPublic)
    assert added.members == sorted([world.researcher.id, world.outsider.id])
    second = rita.projects.create("Project Q", description="another")
    assert isinstance(second, ProjectPublic) and second.description == "another"


def test_task_submit_wait_and_result_are_typed(world: World) -> None:
    rita = sdk(world)
    task = rita.tasks.submit("mean", datasets=["cohort"], where="age >= 18", columns=["age"])
    assert isinstance(task, TaskPublic) and task.status is TaskStatus.running
    assert task.params["where"] == {"column": "age", "op": ">=", "value": 18}
    assert all(isinstance(r, NodeRunStatus) for r in task.runs)

    answer_all(world, world.node_a, mean_output(10, 300.0))
    answer_all(world, world.node_b, mean_output(20, 900.0))
    finished = rita.tasks.wait(task.id, timeout=120, progress=False)
    assert isinstance(finished, TaskPublic) and finished.status is TaskStatus.completed
    assert rita.tasks.get(task.id) == finished
    assert rita.tasks.list() == [finished]  # the researcher's only project is the default

    result = rita.tasks.result(finished)
    assert isinstance(result, TaskResult)
    assert isinstance(result.result, MeanResult)
    age = result.result.columns["age"]
    assert isinstance(age, MeanStats)
    assert age.n == 30 and age.mean == pytest.approx(40.0, abs=1e-12)
    assert {n.node_name for n in result.nodes} == {"node-a", "node-b"}
    assert all(isinstance(n, NodeRunStatus) and n.output_status is None for n in result.nodes)
    assert result.rounds == 1 and result.withheld_nodes == 0
    assert result.contributing_nodes == len(result.nodes)


@pytest.fixture
def answering_nodes(world: World) -> Iterator[None]:
    """Both nodes long-poll for runs in a thread (their own TestClient) and answer them."""
    outputs = {world.node_a.id: mean_output(4, 40.0), world.node_b.id: mean_output(6, 120.0)}
    with nodes_answering(world, outputs):
        yield


@pytest.mark.usefixtures("answering_nodes")
def test_tasks_run_submits_follows_the_long_poll_and_returns_the_typed_result(
    world: World,
) -> None:
    result = sdk(world).tasks.run("mean", datasets=["cohort"], columns=["age"], timeout=120)
    assert isinstance(result.result, MeanResult)
    assert result.result.columns["age"].n == 10
    assert result.result.columns["age"].mean == pytest.approx(16.0, abs=1e-12)


@pytest.mark.usefixtures("answering_nodes")
def test_tasks_run_without_a_progress_bar_is_one_request_when_the_task_ends_in_time(
    world: World,
) -> None:
    """The submission itself waits for the end (``POST /api/tasks?wait=``): no ``/wait``."""
    sent: list[str] = []
    http = TestClient(world.app, base_url=URL)
    http.event_hooks = {
        "request": [lambda request: sent.append(f"{request.method} {request.url.path}")]
    }
    rita = Client(url=URL, token=world.researcher.token, http_client=http)
    result = rita.tasks.run(
        "mean", datasets=["cohort"], project=world.project_id, columns=["age"], progress=False
    )
    assert result.result.columns["age"].n == 10
    assert result.result.columns["age"].mean == pytest.approx(16.0, abs=1e-12)
    assert sent == ["POST /api/tasks"]


# ---------------------------------------------------------------------------- errors


def test_hub_errors_become_medfed_error_classes_with_the_hubs_message(world: World) -> None:
    rita, outsider, admin = sdk(world), sdk(world, world.outsider), sdk(world, world.admin)
    unknown = sdk(world, token="mfu_unknown")
    cases = [  # the SDK call, its error class, and the same request made raw
        (unknown.users.me, Unauthorized, "/api/me", unknown.token),
        (
            lambda: outsider.projects.get(world.project_id),
            Forbidden,
            f"/api/projects/{world.project_id}",
            world.outsider.token,
        ),
        (lambda: rita.datasets.get(999), NotFound, "/api/datasets/999", world.researcher.token),
    ]
    for call, cls, path, token in cases:
        raw = world.api.get(path, headers={"Authorization": f"Bearer {token}"})
        with pytest.raises(cls) as caught:
            call()
        assert caught.value.status_code == raw.status_code == cls.status_code
        assert caught.value.message == raw.json()["detail"]

    with pytest.raises(Conflict, match="organization 'Org B' exists already"):
        admin.organizations.create("Org B")
    with pytest.raises(BadRequest, match=r"mean: column 'grade' is string, not numeric"):
        rita.tasks.submit("mean", datasets=["cohort"], columns=["grade"])
    with pytest.raises(NotFound, match="dataset 'ghost' not found"):
        rita.tasks.submit("mean", datasets=["ghost"], columns=["age"])
    with pytest.raises(BadRequest, match="password"):
        admin.users.create("x1", "short", organization_id=world.org_a)
    with pytest.raises(Forbidden, match=f"not a member of project {world.project_id}"):
        outsider.tasks.list(project=world.project_id)
    assert world.count("tasks") == 0


def test_client_side_errors_use_the_same_classes(world: World) -> None:
    with pytest.raises(BadRequest, match="use '=='"):
        sdk(world).tasks.submit("mean", datasets=["cohort"], where="age = 5", columns=["age"])
    with pytest.raises(BadRequest, match="you belong to 0 projects"):
        sdk(world, world.outsider).tasks.list()
    assert world.count("tasks") == 0


def test_login_gives_a_working_client_and_a_wrong_password_is_unauthorized(world: World) -> None:
    client = Client.login(URL, "rita", PASSWORD, http_client=world.api)
    assert client.token is not None and client.token.startswith("mfu_")
    assert client.users.me().id == world.researcher.id
    with pytest.raises(Unauthorized, match="wrong username or password"):
        Client.login(URL, "rita", "not-the-password", http_client=world.api)


def test_a_failed_task_raises_task_failed_with_the_hubs_reason(world: World) -> None:
    rita = sdk(world)
    task = rita.tasks.submit("mean", datasets=["node-a/cohort"], columns=["age"])
    assignment = world.claim(world.node_a)
    assert assignment is not None
    refusal = {"lease_id": assignment["lease_id"], "status": "refused", "error": "not entitled"}
    assert world.post_outcome(world.node_a, assignment["run_id"], refusal).status_code == 200
    finished = rita.tasks.wait(task.id, timeout=120, progress=False)
    assert finished.status is TaskStatus.failed
    with pytest.raises(TaskFailed) as caught:
        rita.tasks.result(finished)
    assert caught.value.task == finished
    assert finished.error is not None and finished.error in caught.value.message
    assert "not entitled" in caught.value.message
