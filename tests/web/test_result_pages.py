"""Results people would rather look at: generated run forms, plots, tables, folded rounds.

Against the real app and database (TestClient) in the world of :mod:`hubtools`: every
registered algorithm's form is generated from its parameter schema with column pickers
filled from the datasets' schema; a form post creates the same task as the API; task
pages show datasets by name, parameters in words, the result as tables and its plot as a
PNG, one row per node with its rounds folded, never which node withheld; a training has
its metrics chart and its model in the registry page (the generic tables themselves:
``tests/unit/test_result_tables.py``).
"""

from __future__ import annotations

import hashlib
import re
from html import unescape
from typing import Any

import numpy as np
import pytest
from test_pages import sign_in

from hubtools import ADMIN_PASSWORD, ADMIN_USERNAME, SQLITE_ONLY, NodeInfo, World, done, mean_output
from medfed.algorithms.learning.examples import TABULAR_LOGREG
from medfed.algorithms.learning.tensors import encode
from medfed.algorithms.registry import algorithm_names, get_algorithm
from medfed.hub.web.param_form import COLUMN_PARAMS

pytestmark = SQLITE_ONLY

PNG = b"\x89PNG\r\n\x1a\n"
OPTION = re.compile(r'<option value="([^"]*)"( selected)?>')


def _field(html: str, name: str) -> str:
    """The HTML of one generated field: its <select>, <input> or <textarea>."""
    opening = re.search(
        rf'<(select|input|textarea)[^>]*name="{re.escape(name)}" id="param-{re.escape(name)}"',
        html,
    )
    assert opening, f"no field {name!r}"
    closing = ">" if opening.group(1) == "input" else f"</{opening.group(1)}>"
    return html[opening.start() : html.index(closing, opening.start()) + len(closing)]


def _section(html: str, element_id: str) -> str:
    start = html.index(f'id="{element_id}"')
    return html[start : html.index("</table>", start)]


# ------------------------------------------------------------------ generated forms


@pytest.mark.parametrize("algorithm", algorithm_names())
def test_every_algorithm_gets_a_form_from_its_schema_with_column_pickers(
    world: World, algorithm: str
) -> None:
    sign_in(world.api, "rita")
    page = world.api.get(f"/projects/{world.project_id}", params={"algorithm": algorithm})
    assert page.status_code == 200, page.text
    assert f'<option value="{algorithm}" selected>' in page.text
    assert f'data-algorithm="{algorithm}"' in page.text
    properties = get_algorithm(algorithm).Params.model_json_schema()["properties"]
    for name, prop in properties.items():
        html = _field(page.text, name)
        # validation's ``outcome`` is an object (column and value, or a filter): a text box
        if name in COLUMN_PARAMS and "$ref" not in prop:
            assert html.startswith("<select")
            values = [v for v, _ in OPTION.findall(html) if v]
            assert values == ["age", "grade", "size"], (name, html)  # the dataset's schema
            assert ">age (integer)<" in html
    # the htmx fragment (algorithm changed in the page) is the same form, without the page
    fragment = world.api.get(
        f"/projects/{world.project_id}/run-form",
        params={"algorithm": algorithm, "datasets": [world.node_a.dataset_id]},
    )
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert f'data-algorithm="{algorithm}"' in fragment.text
    for name in properties:
        _field(fragment.text, name)


def test_the_form_widgets_follow_the_schema(world: World) -> None:
    sign_in(world.api, "rita")
    page = world.api.get(f"/projects/{world.project_id}", params={"algorithm": "glm"}).text
    family = _field(page, "family")
    assert family.startswith("<select") and OPTION.findall(family) == [
        ("gaussian", " selected"),
        ("binomial", ""),
        ("poisson", ""),
    ]
    assert "multiple" in _field(page, "covariates")  # a list of columns: a multi-select
    assert 'type="number"' in _field(page, "max_iter") and 'min="1"' in _field(page, "max_iter")
    assert 'type="checkbox"' in _field(page, "intercept") and "checked" in _field(page, "intercept")
    assert 'placeholder="age &gt; 50"' in _field(page, "where")  # the filter text syntax
    train = world.api.get(f"/projects/{world.project_id}", params={"algorithm": "fl.train"}).text
    assert _field(train, "dp").startswith("<textarea")  # a nested object: JSON
    assert "noise_multiplier" in train  # … whose fields the help names


def test_the_form_creates_the_same_task_as_the_api(world: World) -> None:
    csrf = sign_in(world.api, "rita")
    form = {
        "csrf_token": csrf,
        "algorithm": "glm",
        "datasets": [world.node_a.dataset_id, world.node_b.dataset_id],
        "outcome": "size",
        "covariates": ["age", "grade"],
        "categorical": ["grade"],
        "family": "gaussian",
        "intercept": ["false", "true"],  # the hidden "false" and the ticked box
        "max_iter": "50",
        "tol": "",  # empty: the default
        "weights": "",
        "where": "age > 20 and grade in ('I', 'II')",
    }
    page = world.api.post(f"/projects/{world.project_id}/tasks", data=form)
    assert page.status_code == 200, page.text
    task_id = int(str(page.url).rsplit("/", 1)[1])
    params = {
        "outcome": "size",
        "covariates": ["age", "grade"],
        "categorical": ["grade"],
        "family": "gaussian",
        "intercept": True,
        "max_iter": 50,
        "where": {
            "and": [
                {"column": "age", "op": ">", "value": 20},
                {"column": "grade", "op": "in", "value": ["I", "II"]},
            ]
        },
    }
    api_task = world.create_task("glm", params=params)
    assert world.task(task_id)["params"] == api_task["params"]
    # the page names datasets and says the parameters in words, the filter as text
    meta = page.text[page.text.index('id="task-meta"') :]
    assert "cohort at node-a; cohort at node-b" in meta
    assert "age &gt; 20 and grade in (&#39;I&#39;, &#39;II&#39;)" in meta
    assert "{&#34;" not in meta and '{"' not in meta  # no raw JSON


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_iter": "lots"}, "glm: parameter max_iter: &#39;lots&#39; is not a whole number"),
        ({"outcome": "grade"}, "grade"),  # the service's own check: not numeric
        ({"where": "age >"}, "filter"),
        ({"datasets": []}, "tick at least one dataset"),
    ],
)
def test_a_refused_form_comes_back_with_the_message_and_the_values_entered(
    world: World, change: dict[str, Any], message: str
) -> None:
    csrf = sign_in(world.api, "rita")
    form: dict[str, Any] = {
        "csrf_token": csrf,
        "algorithm": "glm",
        "datasets": [world.node_a.dataset_id],
        "outcome": "size",
        "covariates": ["age"],
        "family": "poisson",
        "max_iter": "20",
        **change,
    }
    page = world.api.post(f"/projects/{world.project_id}/tasks", data=form)
    assert page.status_code == 422, page.text
    error = re.search(r'id="run-error">([^<]*)<', page.text)
    assert error and message in error.group(1), page.text
    assert 'data-algorithm="glm"' in page.text
    assert ("poisson", " selected") in OPTION.findall(_field(page.text, "family"))
    assert ("age", " selected") in OPTION.findall(_field(page.text, "covariates"))
    assert world.count("tasks") == 0


# ------------------------------------------------------------------ results


def _run_form(world: World, csrf: str, algorithm: str, **fields: Any) -> int:
    data = {"csrf_token": csrf, "algorithm": algorithm, **fields}
    page = world.api.post(f"/projects/{world.project_id}/tasks", data=data)
    assert page.status_code == 200, page.text
    return int(str(page.url).rsplit("/", 1)[1])


def test_a_histogram_task_shows_its_plot_and_its_bins_as_a_table(world: World) -> None:
    csrf = sign_in(world.api, "rita")
    task_id = _run_form(
        world,
        csrf,
        "histogram",
        datasets=[world.node_a.dataset_id],
        column="age",
        bins="0, 50, 100",
    )
    assert world.api.get(f"/tasks/{task_id}/plot.png").status_code == 404  # not yet
    run = world.claim(world.node_a)
    assert run is not None
    output = {"counts": [12, 30], "below": 0, "above": 0}
    assert world.post_outcome(world.node_a, run["run_id"], done(run, output)).status_code == 200

    page = world.api.get(f"/tasks/{task_id}").text
    assert 'id="task-state">completed' in page
    assert f'src="/tasks/{task_id}/plot.png' in page
    tables = page[page.index('id="result-tables"') :]
    assert "<td>[0, 50)</td><td>12</td>" in tables and "<td>[50, 100)</td><td>30</td>" in tables
    assert 'id="result-summary"' in page  # the CLI's text stays, under the tables
    png = world.api.get(f"/tasks/{task_id}/plot.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == PNG


def test_a_result_without_a_plot_has_tables_and_no_image(world: World) -> None:
    csrf = sign_in(world.api, "rita")
    task_id = _run_form(world, csrf, "mean", datasets=[world.node_a.dataset_id], columns="age")
    run = world.claim(world.node_a)
    assert run is not None
    world.post_outcome(world.node_a, run["run_id"], done(run, mean_output(10, 500.0)))
    page = world.api.get(f"/tasks/{task_id}").text
    assert "<caption>columns</caption>" in page
    assert "<td>age</td><td>10</td><td>50</td>" in page
    assert 'id="result-plot"' not in page
    assert world.api.get(f"/tasks/{task_id}/plot.png").status_code == 404


def test_the_task_page_never_says_which_node_withheld(world: World) -> None:
    csrf = sign_in(world.api, "rita")
    both = [world.node_a.dataset_id, world.node_b.dataset_id]
    task_id = _run_form(world, csrf, "mean", datasets=both, columns="age")
    run_a, run_b = world.claim(world.node_a), world.claim(world.node_b)
    assert run_a is not None and run_b is not None
    world.post_outcome(world.node_a, run_a["run_id"], done(run_a, mean_output(10, 500.0)))
    withheld = {"lease_id": run_b["lease_id"], "status": "done", "output_status": "suppressed"}
    assert world.post_outcome(world.node_b, run_b["run_id"], withheld).status_code == 200
    page = world.api.get(f"/tasks/{task_id}").text
    assert "1 node(s) contributed, 1 withheld their answer" in page
    nodes = _section(page, "task-nodes")
    rows = re.findall(r'<tr class="node-row">.*?</tr>', nodes, re.S)
    assert len(rows) == 2
    # the two rows differ only in the node's and dataset's names
    assert rows[0].replace("node-a", "node-X") == rows[1].replace("node-b", "node-X")
    assert "suppressed" not in nodes and "withheld" not in nodes


# ------------------------------------------------------------------ a training


W0 = {"w": np.array([1.0, 2.0, 3.0], dtype=np.float32), "b": np.zeros(1, dtype=np.float32)}


def _start_training(world: World, csrf: str) -> int:
    researcher = world.researcher.headers
    plan = world.api.post(
        "/api/plans", json={"name": "logreg", "source": TABULAR_LOGREG}, headers=researcher
    )
    assert plan.status_code == 201, plan.text
    weights = encode(W0)
    sha = hashlib.sha256(weights).hexdigest()
    put = world.api.put(
        "/api/blobs", content=weights, headers={**researcher, "X-Content-SHA256": sha}
    )
    assert put.status_code == 200, put.text
    fields = {
        "datasets": [world.node_a.dataset_id, world.node_b.dataset_id],
        "name": "risk-model",
        "plan": plan.json()["hash"],
        "initial_weights": sha,
        "columns": ["age", "size"],
        "label": "size",
        "metrics": "regression",
        "holdout": '{"fraction": 0.25, "seed": 3}',
        "min_nodes": "2",
        "min_rows_per_update": "10",
        "rounds": "2",
        "strategy": "fedavg",
    }
    unlabelled = world.api.post(
        f"/projects/{world.project_id}/tasks",
        data={"csrf_token": csrf, "algorithm": "fl.train", **fields, "label": "grade"},
    )
    assert unlabelled.status_code == 422
    assert "the label column 'grade' must be one of columns" in unescape(unlabelled.text)
    missing = world.api.post(
        f"/projects/{world.project_id}/tasks",
        data={"csrf_token": csrf, "algorithm": "fl.train", **fields, "initial_weights": "0" * 64},
    )
    assert missing.status_code == 404 and "are not at the hub" in missing.text  # as the API
    task_id = _run_form(world, csrf, "fl.train", **fields)
    params = world.api.get(f"/api/tasks/{task_id}", headers=researcher).json()["params"]
    assert (params["label"], params["metrics"]) == ("size", "regression")
    assert params["holdout"] == {"fraction": 0.25, "seed": 3}
    assert (params["min_nodes"], params["min_rows_per_update"]) == (2, 10)
    return task_id


def _answer(world: World, node: NodeInfo, output: dict[str, Any]) -> dict[str, Any]:
    run = world.claim(node)
    assert run is not None
    assert world.post_outcome(node, run["run_id"], done(run, output)).status_code == 200
    return run


def _train(world: World, node: NodeInfo, loss: float, accuracy: float) -> None:
    run = world.claim(node)
    assert run is not None and run["state"]["phase"] == "train"
    update = encode({k: np.full_like(v, 0.5) for k, v in W0.items()})
    put = world.api.put(
        f"/api/node/runs/{run['run_id']}/blob",
        content=update,
        headers={
            **node.headers,
            "X-Lease-Id": run["lease_id"],
            "X-Content-SHA256": hashlib.sha256(update).hexdigest(),
        },
    )
    assert put.status_code == 200, put.text
    metrics = {"loss": loss, "accuracy": accuracy}
    output = {
        "update": put.json()["sha256"],
        "n": 100,
        "n_eval": 20,
        "global_metrics": metrics,
        "local_metrics": metrics,
        "seconds": 0.1,
    }
    assert world.post_outcome(node, run["run_id"], done(run, output)).status_code == 200


def test_a_training_charts_its_rounds_folds_them_per_node_and_registers_its_model(
    world: World,
) -> None:
    csrf = sign_in(world.api, "rita")
    task_id = _start_training(world, csrf)
    a, b = world.node_a, world.node_b
    for node in (a, b):
        _answer(world, node, {"ready": 1, "n": 100})
    page = world.api.get(f"/tasks/{task_id}").text
    assert 'id="result-plot"' not in page  # no round trained yet: no chart
    _train(world, a, 0.7, 0.6)
    _train(world, b, 0.5, 0.7)
    running = world.api.get(f"/tasks/{task_id}/status").text
    assert 'id="task-state">running' in running and 'id="result-plot"' in running
    chart = world.api.get(f"/tasks/{task_id}/plot.png")  # drawn from the progress so far
    assert chart.content[:8] == PNG and "no-cache" in chart.headers["cache-control"]
    _train(world, a, 0.4, 0.8)
    _train(world, b, 0.3, 0.8)
    for node in (a, b):
        _answer(world, node, {"n": 100, "n_eval": 20, "global_metrics": {"accuracy": 0.8}})

    page = world.api.get(f"/tasks/{task_id}").text
    assert 'id="task-state">completed' in page, page
    nodes = _section(page, "task-nodes")
    assert nodes.count('class="node-row"') == 2  # the first round of each node only:
    assert nodes.count("1 round, done") == 2  # later rounds would name who withheld
    assert 'id="later-rounds"' in page and "not listed per node" in page
    assert "cohort at node-a" in nodes and "cohort at node-b" in nodes
    world.api.post("/logout", data={"csrf_token": csrf})
    sign_in(world.api, ADMIN_USERNAME, ADMIN_PASSWORD)  # the hub administrator sees them all
    admin_page = world.api.get(f"/tasks/{task_id}").text
    assert _section(admin_page, "task-nodes").count("4 rounds, all done") == 2
    assert 'id="later-rounds"' not in admin_page
    sign_in(world.api, "rita")
    assert "<caption>history</caption>" in page  # the rounds' metrics as a table too
    chart = world.api.get(f"/tasks/{task_id}/plot.png")
    assert chart.content[:8] == PNG and "max-age" in chart.headers["cache-control"]
    assert 'id="task-model"' in page and "risk-model" in page

    registry = world.api.get(f"/projects/{world.project_id}/models")
    assert registry.status_code == 200
    rows = re.findall(r'<tr class="model">.*?</tr>', registry.text, re.S)
    model = world.api.get(
        "/api/models", params={"project_id": world.project_id}, headers=world.researcher.headers
    ).json()[0]
    assert len(rows) == 1
    assert "risk-model" in rows[0] and "v1" in rows[0]
    assert model["blob_sha256"][:16] in rows[0] and f'href="/tasks/{task_id}"' in rows[0]
    assert "accuracy 0.8" in rows[0]
    weights = world.api.get(f"/models/{model['id']}/download")
    assert weights.status_code == 200
    assert hashlib.sha256(weights.content).hexdigest() == model["blob_sha256"]

    world.api.cookies.clear()
    sign_in(world.api, "otto")  # not a member of the project
    assert world.api.get(f"/projects/{world.project_id}/models").status_code == 403
    assert world.api.get(f"/tasks/{task_id}/plot.png").status_code == 403
