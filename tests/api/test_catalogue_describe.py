"""Describing a dataset: the metadata API and ``medfed datasets describe`` against the real hub.

The CLI runs in this process (``medfed.cli.main.main``) with its hub client pointed at the
test's app (httpx over the ASGI app), so it goes through the same routes as from a shell.
Checked: flags and files (TOML, JSON) set title, description, keywords, themes, DUO
codes, contact and licence; bad input is one clear line and changes nothing; a released
or published version cannot be described; a new version starts from the previous
version's description; search finds a word of the description; the node's description
does not overwrite the stewards'.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cataloguetools import move, register, state_of
from hubtools import SQLITE_ONLY, World
from medfed.cli import catalogue as cli_catalogue
from medfed.cli.main import main
from medfed.sdk.client import Client

pytestmark = SQLITE_ONLY

DESCRIPTION = "Recurrence-free survival of node-positive patients after mastectomy"


def _patch(world: World, dataset_id: int, body: dict[str, Any]) -> Any:
    return world.api.patch(
        f"/api/datasets/{dataset_id}/metadata", json=body, headers=world.org_admin.headers
    )


def _search(world: World, q: str) -> list[int]:
    response = world.api.get("/api/catalogue", params={"q": q}, headers=world.org_admin.headers)
    assert response.status_code == 200, response.text
    return [d["id"] for d in response.json()["results"]]


@pytest.fixture
def cli(world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run ``medfed ARGS`` as the org admin of Org B; returns (exit code, stdout, stderr)."""

    def hub(url: str | None, token: str | None, project: int | None = None) -> Client:
        return Client(url="http://hub", token=world.org_admin.token, http_client=world.api)

    monkeypatch.setattr(cli_catalogue, "client", hub)

    def run(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_contact_and_licence_are_stored_exported_and_checked(world: World) -> None:
    dataset_id = register(world, world.node_b, "study")["id"]
    body = {"contact": "Data Office <data@org-b.example>", "license": "CC-BY-4.0"}
    response = _patch(world, dataset_id, body)
    assert response.status_code == 200, response.text
    assert (response.json()["contact"], response.json()["license"]) == (
        "Data Office <data@org-b.example>",
        "CC-BY-4.0",
    )
    doc = world.api.get(f"/api/datasets/{dataset_id}/dcat", headers=world.admin.headers).json()
    assert doc["dcat:contactPoint"] == {
        "@type": "vcard:Kind",
        "vcard:hasEmail": {"@id": "mailto:data@org-b.example"},
        "vcard:fn": "Data Office",
    }
    assert doc["dct:license"] == {"@id": "https://spdx.org/licenses/CC-BY-4.0"}
    rights = world.api.get(f"/api/datasets/{dataset_id}/datacite", headers=world.admin.headers)
    assert {
        "rights": "CC-BY-4.0",
        "rightsUri": "https://spdx.org/licenses/CC-BY-4.0",
        "rightsIdentifier": "CC-BY-4.0",
    } in rights.json()["data"]["attributes"]["rightsList"]

    before = world.count("ledger_entries")
    for bad, needle in [
        ({"contact": "call Stella"}, "must include an e-mail address"),
        ({"license": "CC BY 4.0"}, "SPDX id"),
        ({"titel": "typo"}, "titel"),
    ]:
        refused = _patch(world, dataset_id, {**bad, "title": "changed"})
        assert refused.status_code == 422, refused.text
        assert needle in refused.json()["detail"]
    assert world.count("ledger_entries") == before
    assert state_of(world, dataset_id)["title"] is None


def test_a_released_or_published_version_cannot_be_described(world: World) -> None:
    dataset_id = register(world, world.node_b, "study")["id"]
    assert _patch(world, dataset_id, {"title": "Study"}).status_code == 200
    for step in ("release", "publish"):
        assert move(world, world.admin.headers, dataset_id, step).status_code == 200
        refused = _patch(world, dataset_id, {"description": "too late"})
        assert refused.status_code == 409
        assert "frozen" in refused.json()["detail"]
    assert state_of(world, dataset_id)["description"] == ""


def test_a_new_version_starts_from_the_described_metadata(world: World) -> None:
    v1 = register(world, world.node_b, "study", description="node text")["id"]
    body = {
        "title": "Study",
        "description": DESCRIPTION,
        "keywords": ["breast cancer"],
        "duo_codes": ["HMB"],
        "contact": "https://org-b.example/data",
        "license": "CC0-1.0",
    }
    assert _patch(world, v1, body).status_code == 200
    # the node announcing its draft again (a restart) keeps the stewards' description
    register(world, world.node_b, "study", description="node text")
    assert state_of(world, v1)["description"] == DESCRIPTION
    assert move(world, world.admin.headers, v1, "release").status_code == 200
    v2 = register(world, world.node_b, "study", row_count=200, description="node text")["id"]
    assert v2 != v1
    record = state_of(world, v2)
    assert record["previous_id"] == v1 and record["state"] == "draft"
    for key, value in body.items():
        assert record[key] == value, key
    # a dataset nobody described keeps following the node's description
    fresh = register(world, world.node_b, "other", description="first words")["id"]
    register(world, world.node_b, "other", description="better words")
    assert state_of(world, fresh)["description"] == "better words"


def test_search_finds_a_word_of_the_description(world: World) -> None:
    dataset_id = register(world, world.node_b, "study")["id"]
    assert _search(world, "mastectomy") == []
    assert _patch(world, dataset_id, {"description": DESCRIPTION}).status_code == 200
    assert _search(world, "mastectomy") == [dataset_id]
    assert _search(world, "MASTECTOMY node-positive") == [dataset_id]
    assert _patch(world, dataset_id, {"keywords": ["oncology"]}).status_code == 200
    assert _search(world, "oncology") == [dataset_id]


def test_cli_describe_from_flags(world: World, cli: Any) -> None:
    dataset_id = register(world, world.node_b, "study")["id"]
    code, out, err = cli(
        "datasets", "describe", str(dataset_id),
        "--title", "Breast cancer cohort",
        "--description", DESCRIPTION,
        "-k", "breast cancer,survival", "--keyword", "GBSG2",
        "--theme", "HEAL",
        "--duo", "hmb,IRB",
        "--contact", "Stella <stella@org-b.example>",
        "--licence", "CC-BY-4.0",
        "--access-rights", "RESTRICTED",
        "--access-condition", "REMOTE_PROCESSING",
        "--individuals", "680", "--records", "686",
    )  # fmt: skip
    assert code == 0, err
    assert f"dataset {dataset_id} node-b/study v1" in out and "described: title" in out
    record = state_of(world, dataset_id)
    assert record["title"] == "Breast cancer cohort"
    assert record["keywords"] == ["breast cancer", "survival", "GBSG2"]
    assert record["duo_codes"] == ["HMB", "IRB"]
    assert (record["contact"], record["license"]) == ("Stella <stella@org-b.example>", "CC-BY-4.0")
    assert (record["unique_individuals"], record["records"]) == (680, 686)
    assert record["access_conditions"] == ["REMOTE_PROCESSING"]
    assert _search(world, "mastectomy") == [dataset_id]
    shown = cli("datasets", "show", str(dataset_id))
    assert shown[0] == 0 and "stella@org-b.example" in shown[1] and "CC-BY-4.0" in shown[1]


def test_cli_describe_from_toml_and_json_files_options_win(
    world: World, cli: Any, tmp_path: Path
) -> None:
    dataset_id = register(world, world.node_b, "study")["id"]
    toml = tmp_path / "meta.toml"
    toml.write_text(
        'title = "From TOML"\n'
        f'description = "{DESCRIPTION}"\n'
        'keywords = ["breast cancer"]\n'
        'duo_codes = ["GRU"]\n'
        'licence = "CC0-1.0"\n'
    )
    code, _, err = cli("datasets", "describe", str(dataset_id), "-f", str(toml), "--title", "Mine")
    assert code == 0, err
    record = state_of(world, dataset_id)
    assert (record["title"], record["description"]) == ("Mine", DESCRIPTION)
    assert (record["duo_codes"], record["license"]) == (["GRU"], "CC0-1.0")
    as_json = tmp_path / "meta.json"
    as_json.write_text(json.dumps({"themes": ["HEAL", "TECH"], "records": 12}))
    code, _, err = cli("datasets", "describe", str(dataset_id), "--file", str(as_json))
    assert code == 0, err
    record = state_of(world, dataset_id)
    assert (record["themes"], record["records"], record["title"]) == (["HEAL", "TECH"], 12, "Mine")


def test_cli_describe_bad_input_is_one_line_and_changes_nothing(
    world: World, cli: Any, tmp_path: Path
) -> None:
    dataset_id = register(world, world.node_b, "study")["id"]
    typo = tmp_path / "typo.toml"
    typo.write_text('titel = "x"\n')
    broken = tmp_path / "broken.toml"
    broken.write_text("title = \n")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    before = world.count("ledger_entries")
    cases: list[tuple[list[str], int, str]] = [
        (["--duo", "XYZ", "--title", "t"], 1, "unknown DUO code"),
        (["--contact", "ring me", "--title", "t"], 1, "options: contact: must include an e-mail"),
        (["--records", "-3"], 1, "records"),
        (["--access-rights", "OPEN"], 1, "access_rights"),
        (["-f", str(typo)], 1, "unknown field 'titel'"),
        (["-f", str(broken)], 1, "is not valid TOML"),
        (["-f", str(listed)], 1, "one table of fields"),
        (["-f", str(tmp_path / "missing.toml")], 1, "cannot read"),
        ([], 2, "nothing to describe"),
    ]
    for args, exit_code, needle in cases:
        code, out, err = cli("datasets", "describe", str(dataset_id), *args)
        assert code == exit_code, (args, out, err)
        assert needle in err, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert world.count("ledger_entries") == before
    assert state_of(world, dataset_id)["title"] is None

    assert move(world, world.admin.headers, dataset_id, "release").status_code == 200
    code, _, err = cli("datasets", "describe", str(dataset_id), "--title", "late")
    assert code == 1 and "frozen" in err
