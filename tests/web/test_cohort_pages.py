"""Cohort pages against the real app and database (TestClient), in the world of hubtools.

A researcher imports an ATLAS export (file upload or pasted JSON) and a new version, sees
the definition in words with its versions and hash, is refused with the service's own
message for bad input (nothing stored), counts the cohort at the nodes (a
``cohort_counts`` task on the project's OMOP datasets; the nodes' answers are posted as
the node API receives them) and reads the gated counts with the attrition per rule, then
runs an analysis from the generated form with the cohort preselected.
"""

from __future__ import annotations

import copy
import json
import re
from html import unescape
from typing import Any

from test_pages import sign_in

from circetools import BREAST, NODES, RECURRENCE, cohort, concept_set
from hubtools import SQLITE_ONLY, World, done
from medfed.algorithms.cohorts.circe import definition_hash, parse_definition
from omoptools import omop_datasets

pytestmark = SQLITE_ONLY

RULE = {
    "name": "more than 3 positive nodes",
    "expression": {
        "Type": "ALL",
        "CriteriaList": [
            {
                "Criteria": {
                    "Measurement": {"CodesetId": 1, "ValueAsNumber": {"Value": 3, "Op": "gt"}}
                },
                "StartWindow": {"Start": {"Days": 0, "Coeff": 1}, "End": {"Days": 30, "Coeff": 1}},
                "Occurrence": {"Type": 2, "Count": 1},
            }
        ],
    },
}
DEFINITION = cohort(
    {"ConditionOccurrence": {"CodesetId": 0}},
    [concept_set(0, BREAST, True), concept_set(1, NODES, False)],
    InclusionRules=[RULE],
)
FEATURES = {
    "covariates": [
        {"name": "pnodes", "domain": "measurement", "concepts": [NODES], "value": "last"}
    ],
    "outcome": {"name": "recurrence", "domain": "condition", "concepts": [RECURRENCE]},
}
CELLS = re.compile(r"<td[^>]*>([^<]*)</td>")


def _import(world: World, csrf: str, **fields: Any) -> Any:
    files = fields.pop("files", None)
    data = {"csrf_token": csrf, **fields}
    return world.api.post(
        f"/projects/{world.project_id}/cohorts", data=data, files=files, follow_redirects=False
    )


def _rows(html: str, kind: str) -> list[list[str]]:
    return [CELLS.findall(row) for row in re.findall(rf'<tr class="{kind}">(.*?)</tr>', html, re.S)]


def test_import_a_file_and_a_new_pasted_version_and_read_the_definition(world: World) -> None:
    csrf = sign_in(world.api, "rita")
    assert (
        f'href="/projects/{world.project_id}/cohorts"'
        in world.api.get(f"/projects/{world.project_id}").text
    )
    atlas = {"name": "from ATLAS", "expression": DEFINITION}  # ATLAS's wrapper object
    upload = {"file": ("nodes.json", json.dumps(atlas).encode(), "application/json")}
    first = _import(world, csrf, name="nodes", description="N+ breast cancer", files=upload)
    assert first.status_code == 303, first.text
    page = world.api.get(first.headers["location"]).text
    digest = definition_hash(parse_definition(DEFINITION))
    assert f'<code id="cohort-hash">{digest}</code>' in page
    sets = page[page.index('id="concept-sets"') : page.index("</ul>", page.index("concept-sets"))]
    assert "set 0" in sets and f"{BREAST} (with descendants)" in sets and f"{NODES}" in sets
    rules = page[page.index('id="inclusion-rules"') : page.index("</ol>")]
    assert "more than 3 positive nodes" in rules
    assert "ConditionOccurrence of &#39;set 0&#39;" in page
    assert "end of the observation period" in page
    assert json.loads(unescape(re.search(r'id="definition-json">(.*?)</pre>', page, re.S)[1])) == (
        parse_definition(DEFINITION)
    )

    changed = copy.deepcopy(DEFINITION)
    changed["InclusionRules"][0]["name"] = "more than 9 positive nodes"
    changed["InclusionRules"][0]["expression"]["CriteriaList"][0]["Criteria"]["Measurement"][
        "ValueAsNumber"
    ]["Value"] = 9
    second = _import(world, csrf, name="nodes", definition=json.dumps(changed))
    assert second.status_code == 303
    cohort_id = int(second.headers["location"].split("/")[2].split("?")[0])
    assert second.headers["location"] == f"/cohorts/{cohort_id}?version=2"
    page = world.api.get(second.headers["location"]).text
    assert len(re.findall(r'<tr class="version-row">', page)) == 2
    assert "more than 9 positive nodes" in page
    old = world.api.get(f"/cohorts/{cohort_id}", params={"version": 1}).text
    assert "more than 3 positive nodes" in old and "more than 9" not in old

    listed = world.api.get(f"/projects/{world.project_id}/cohorts").text
    rows = re.findall(r'<tr class="cohort-row">(.*?)</tr>', listed, re.S)
    assert len(rows) == 1 and ">nodes</a>" in rows[0] and "<td>2</td>" in rows[0]
    assert definition_hash(parse_definition(changed))[:12] in rows[0]
    # the new-version link prefills the name
    form = world.api.get(f"/projects/{world.project_id}/cohorts/new", params={"name": "nodes"})
    assert 'id="cohort-name" value="nodes"' in form.text
    # another project's researcher sees no such cohort
    sign_in(world.api, "otto")
    assert world.api.get(f"/cohorts/{cohort_id}").status_code == 404


def test_bad_imports_show_the_service_message_and_store_nothing(world: World) -> None:
    csrf = sign_in(world.api, "rita")
    unknown = copy.deepcopy(DEFINITION)
    unknown["InclusionRules"][0]["expression"]["CriteriaList"][0]["StartWindw"] = {}
    genomic = copy.deepcopy(DEFINITION)
    genomic["PrimaryCriteria"]["CriteriaList"] = [{"GenomicVariant": {"CodesetId": 0}}]
    cases = [
        ({"definition": "{not json"}, "cohort definition is not JSON"),
        (
            {"definition": json.dumps(unknown)},
            "InclusionRules[0].expression.CriteriaList[0].StartWindw",
        ),
        ({"files": {"file": ("g.json", json.dumps(genomic).encode())}}, "GenomicVariant"),
        ({"files": {"file": ("x.json", b"\xff\xfe\x00bad")}}, "is not UTF-8 text"),
        ({}, "choose an ATLAS JSON file or paste the cohort definition"),
        (
            {"definition": "{}", "files": {"file": ("d.json", json.dumps(DEFINITION).encode())}},
            "not both",
        ),
    ]
    for fields, message in cases:
        response = _import(world, csrf, name="bad", **fields)
        assert response.status_code == 422, (message, response.text)
        error = re.search(r'id="import-error">(.*?)</p>', response.text, re.S)
        assert error and message in unescape(error[1]), (message, response.text)
        assert 'id="cohort-name" value="bad"' in response.text  # the values stay in the form
    assert world.count("cohorts") == 0 and world.count("cohort_versions") == 0


def test_count_at_the_nodes_shows_gated_counts_and_attrition_per_rule(world: World) -> None:
    csrf = sign_in(world.api, "rita")
    created = _import(world, csrf, name="nodes", definition=json.dumps(DEFINITION))
    cohort_id = int(created.headers["location"].split("/")[2].split("?")[0])
    # no OMOP dataset yet: the button is off and a post says why
    page = world.api.get(f"/cohorts/{cohort_id}").text
    assert 'id="counts-none"' in page and 'id="count-at-nodes" disabled' in page
    refused = world.api.post(f"/cohorts/{cohort_id}/counts", data={"csrf_token": csrf})
    assert refused.status_code == 422 and "no OMOP dataset" in refused.text
    cdm = omop_datasets(world)
    posted = world.api.post(
        f"/cohorts/{cohort_id}/counts",
        data={"csrf_token": csrf, "version": "1"},
        follow_redirects=False,
    )
    assert posted.status_code == 303, posted.text
    task_id = int(re.search(r"task=(\d+)", posted.headers["location"])[1])
    task = world.task(task_id)
    assert task["algorithm"] == "cohort_counts" and sorted(task["dataset_ids"]) == sorted(cdm)
    assert task["params"]["cohort"]["version"] == 1
    running = world.api.get(f"/cohorts/{cohort_id}/counts/{task_id}").text
    assert f'hx-get="/cohorts/{cohort_id}/counts/{task_id}"' in running and "<html" not in running

    answers = {
        world.node_a.id: {
            "rules": [RULE["name"]],
            "base_persons": 340,
            "attrition": [None],  # under the node's minimum cell count
            "persons": None,
        },
    }
    for node in (world.node_a, world.node_b):
        run = world.claim(node)
        assert run is not None and run["algorithm"] == "cohort_counts"
        if node.id in answers:
            body = done(run, answers[node.id])
        else:  # node-b's gate withholds its whole answer
            body = {"lease_id": run["lease_id"], "status": "done", "output_status": "suppressed"}
        assert world.post_outcome(node, run["run_id"], body).status_code == 200
    assert world.task(task_id)["status"] == "completed"

    page = world.api.get(posted.headers["location"]).text
    table = page[
        page.index('id="attrition"') : page.index("</table>", page.index('id="attrition"'))
    ]
    headers = re.findall(r"<th>([^<]*)</th>", table)
    assert headers == ["node", "entry event", RULE["name"], "in the cohort"]
    rows = {r[0]: r[1:] for r in _rows(table, "count-row")}
    assert rows == {
        "cdm at node-a": ["340", "withheld", "withheld"],
        "cdm at node-b": ["withheld", "withheld", "withheld"],
    }
    assert _rows(table, "total-row") == [["total", "withheld", "withheld", "withheld"]]
    # a node that withheld its answer reads as one whose counts are all under the minimum
    assert "suppressed" not in table
    figure = re.search(r'<svg[^>]*id="attrition-figure".*?</svg>', page, re.S)
    assert figure and ">340<" in figure[0] and "withheld" in figure[0]
    assert re.search(r'id="counts-state">completed<', page)
    # the cohort page without ?task= shows the latest count; a task of another kind is refused
    assert 'id="attrition"' in world.api.get(f"/cohorts/{cohort_id}").text
    other = world.create_task("mean")
    assert world.api.get(f"/cohorts/{cohort_id}?task={other['id']}").status_code == 404


def _blocks(page: str) -> list[str]:
    """The task page's result as text and as JSON."""
    return [
        unescape(re.search(rf'<pre class="result" id="{kind}">(.*?)</pre>', page, re.S)[1])
        for kind in ("result-summary", "result-json")
    ]


def test_a_withheld_answer_is_not_marked_per_node_in_the_result_json_or_task_page(
    world: World,
) -> None:
    """Attack: tell which node withheld its answer from a ``cohort_counts`` result.

    node-b first withholds its whole answer, then (a second task on the same datasets)
    answers with every count under the minimum. What a researcher reads — the API's
    result, the task page's text and JSON — must be the same both times: only the task's
    counts of contributing and withholding nodes may differ.
    """
    csrf = sign_in(world.api, "rita")
    created = _import(world, csrf, name="nodes", definition=json.dumps(DEFINITION))
    cohort_id = int(created.headers["location"].split("/")[2].split("?")[0])
    cdm = omop_datasets(world)
    released = {"rules": [RULE["name"]], "base_persons": 340, "attrition": [150], "persons": 150}
    small = {"rules": [RULE["name"]], "base_persons": None, "attrition": [None], "persons": None}

    def counted(node_b: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
        task = world.create_task(
            "cohort_counts", datasets=cdm, params={"cohort": {"id": cohort_id}}
        )
        for node, answer in ((world.node_a, released), (world.node_b, node_b)):
            run = world.claim(node)
            assert run is not None and run["task_id"] == task["id"]
            body = (
                done(run, answer)
                if answer is not None
                else {"lease_id": run["lease_id"], "status": "done", "output_status": "suppressed"}
            )
            assert world.post_outcome(node, run["run_id"], body).status_code == 200
        public = world.task(task["id"])
        assert public["status"] == "completed", public
        return public, world.api.get(f"/tasks/{task['id']}").text

    withheld, withheld_page = counted(None)
    under_k, under_k_page = counted(small)
    assert (withheld["withheld_nodes"], under_k["withheld_nodes"]) == (1, 0)
    assert withheld["result"] == under_k["result"]
    entry = {n["node_id"]: n for n in withheld["result"]["nodes"]}[world.node_b.id]
    assert set(entry) == {"node_id", "dataset_id", "base_persons", "attrition", "persons"}
    assert (entry["base_persons"], entry["attrition"], entry["persons"]) == (None, [None], None)
    assert "withheld" not in json.dumps(withheld["result"])
    assert _blocks(withheld_page) == _blocks(under_k_page)
    assert "withheld" not in _blocks(withheld_page)[1] and "suppressed" not in withheld_page


def test_the_task_page_names_the_cohort_version_and_hash_with_a_link(world: World) -> None:
    csrf = sign_in(world.api, "rita")
    _import(world, csrf, name="N+ <nodes>", definition=json.dumps(DEFINITION))
    changed = cohort({"ConditionOccurrence": {"CodesetId": 0}}, [concept_set(0, BREAST, True)])
    created = _import(world, csrf, name="N+ <nodes>", definition=json.dumps(changed))
    cohort_id = int(created.headers["location"].split("/")[2].split("?")[0])
    task = world.create_task(
        "cohort_counts",
        datasets=omop_datasets(world),
        params={"cohort": {"id": cohort_id, "version": 1}},
    )
    page = world.api.get(f"/tasks/{task['id']}").text
    meta = page[page.index('id="task-meta"') : page.index("</dl>", page.index('id="task-meta"'))]
    digest = definition_hash(parse_definition(DEFINITION))
    link = (
        f'<a class="cohort-link" href="/cohorts/{cohort_id}?version=1">N+ &lt;nodes&gt;</a>'
        f" v1 · {digest[:12]}"
    )
    assert f"<dt>cohort</dt><dd><code>{link}</code></dd>" in meta
    # the stored definition is not spelled out on the page (the link leads to it)
    assert "ConceptSets" not in meta and "PrimaryCriteria" not in meta and digest not in meta
    assert world.api.get(f"/cohorts/{cohort_id}?version=1").status_code == 200


def test_a_node_error_such_as_an_unknown_concept_shows_on_the_cohort_page(world: World) -> None:
    csrf = sign_in(world.api, "rita")
    created = _import(world, csrf, name="nodes", definition=json.dumps(DEFINITION))
    cohort_id = int(created.headers["location"].split("/")[2].split("?")[0])
    omop_datasets(world)
    posted = world.api.post(
        f"/cohorts/{cohort_id}/counts", data={"csrf_token": csrf}, follow_redirects=False
    )
    message = "cohort: concept id(s) 2099999999 are not in the vocabulary of dataset 'cdm'"
    for node in (world.node_a, world.node_b):
        run = world.claim(node)
        assert run is not None
        body = {"lease_id": run["lease_id"], "status": "failed", "error": message}
        assert world.post_outcome(node, run["run_id"], body).status_code == 200
    page = unescape(world.api.get(posted.headers["location"]).text)
    assert message in page and 'id="attrition"' not in page


def test_run_an_analysis_with_the_cohort_preselected(world: World) -> None:
    csrf = sign_in(world.api, "rita")
    _import(world, csrf, name="nodes", definition=json.dumps(DEFINITION))
    created = _import(
        world,
        csrf,
        name="nodes",
        definition=json.dumps(
            cohort({"ConditionOccurrence": {"CodesetId": 0}}, [concept_set(0, BREAST, True)])
        ),
    )
    cohort_id = int(created.headers["location"].split("/")[2].split("?")[0])
    cdm = omop_datasets(world)
    page = world.api.get(f"/cohorts/{cohort_id}").text
    assert f'<option value="{cohort_id}/2" selected>' in page
    assert f'<option value="{cohort_id}/1">' in page
    assert 'data-algorithm="km"' in page
    # the default features (age, sex) fill the column pickers; an outcome adds its variables
    duration = re.search(r'<select name="duration".*?</select>', page, re.S)[0]
    assert re.findall(r'<option value="([^"]+)"', duration) == ["age", "female"]
    fragment = world.api.get(
        f"/cohorts/{cohort_id}/run-form",
        params={"algorithm": "cox", "features": json.dumps(FEATURES)},
    )
    assert fragment.status_code == 200 and "<html" not in fragment.text
    covariates = re.search(r'<select name="covariates".*?</select>', fragment.text, re.S)[0]
    assert re.findall(r'<option value="([^"]+)"', covariates) == [
        "age",
        "female",
        "pnodes",
        "recurrence_event",
        "recurrence_time",
    ]
    form = {
        "csrf_token": csrf,
        "cohort": f"{cohort_id}/1",
        "algorithm": "cox",
        "datasets": [str(i) for i in cdm],
        "features": json.dumps(FEATURES),
        "duration": "recurrence_time",
        "event": "recurrence_event",
        "covariates": ["age", "pnodes"],
    }
    bad = world.api.post(f"/cohorts/{cohort_id}/tasks", data={**form, "covariates": ["tsize"]})
    assert bad.status_code == 422 and "tsize" in unescape(
        re.search(r'id="run-error">(.*?)</p>', bad.text, re.S)[1]
    )
    assert "pnodes" in bad.text and world.count("tasks") == 0  # the form kept; nothing stored
    broken = world.api.post(f"/cohorts/{cohort_id}/tasks", data={**form, "features": "{"})
    assert broken.status_code == 422 and "features: not valid JSON" in broken.text
    made = world.api.post(f"/cohorts/{cohort_id}/tasks", data=form, follow_redirects=False)
    assert made.status_code == 303, made.text
    task = world.task(int(made.headers["location"].rsplit("/", 1)[1]))
    assert task["algorithm"] == "cox"
    assert (task["params"]["cohort"]["id"], task["params"]["cohort"]["version"]) == (cohort_id, 1)
    assert task["params"]["cohort"]["hash"] == definition_hash(parse_definition(DEFINITION))
    assert task["params"]["features"]["outcome"]["name"] == "recurrence"
    assert task["params"]["covariates"] == ["age", "pnodes"]
