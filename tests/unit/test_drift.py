"""Dataset drift at the node, the strict CSV reader and the outbox of unacknowledged results.

The reader refuses what pandas would silently mangle (``age.1``, blanks from a short row,
shifted values from a long one) with the line and field counts, never a value; the drift
record tells a schema change (refused until the steward accepts it) from a content change
(the next version) and an unchanged file; the outbox keeps results across a restart.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medfed.cli.main import app
from medfed.common.errors import BadRequest, NotFound
from medfed.node.drift import DriftRecord, schema_changes
from medfed.node.manifest import manifest_root
from medfed.node.outbox import Outbox
from medfed.node.stores.tables import TableStore

ROWS = "age,sex,time\n61,m,120\n55,f,340\n70,f,88\n"


def _store(path: Path, text: str) -> TableStore:
    path.write_text(text)
    return TableStore.open(path)


def test_the_csv_reader_refuses_a_duplicate_column_name(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match=r"column 'age' appears twice in the header") as err:
        _store(tmp_path / "t.csv", "age,sex,age\n61,m,62\n")
    assert "fields 1 and 3" in err.value.message
    assert "62" not in err.value.message.replace("fields 1 and 3", "")


@pytest.mark.parametrize(
    ("text", "line", "fields"),
    [
        ("age,sex,time\n61,m,120\n55,f\n", 3, 2),  # short: pandas would fill a blank
        ("age,sex,time\n61,m,120\n55,f,340,secret-77\n", 3, 4),  # long: values would shift
    ],
)
def test_the_csv_reader_refuses_ragged_rows_naming_the_line_not_the_values(
    tmp_path: Path, text: str, line: int, fields: int
) -> None:
    with pytest.raises(BadRequest) as err:
        _store(tmp_path / "t.csv", text)
    assert err.value.message == (
        f"table: t.csv line {line} has {fields} field(s), the header has 3; fix or remove that row"
    )


def test_blank_lines_and_quoted_commas_are_still_read(tmp_path: Path) -> None:
    store = _store(tmp_path / "t.csv", 'age,note\n61,"a, b"\n\n55,c\n')
    assert store.row_count == 2
    assert list(store.select(["note"])["note"]) == ["a, b", "c"]


def _check(record: DriftRecord, store: TableStore) -> str:
    return record.check("cohort", store.columns, manifest_root(store)).kind


def test_drift_tells_unchanged_content_and_schema_changes_apart(tmp_path: Path) -> None:
    record = DriftRecord(tmp_path / "state")
    path = tmp_path / "cohort.csv"
    first = _store(path, ROWS)
    assert _check(record, first) == "new"
    record.registered(
        "cohort",
        columns=first.columns,
        manifest_root=manifest_root(first),
        dataset_id=7,
        version=1,
    )
    assert _check(record, _store(path, ROWS)) == "same"
    assert _check(record, _store(path, ROWS.replace("88", "89"))) == "content"
    # a stray text value turns age into a string column
    verdict = record.check(
        "cohort", (s := _store(path, ROWS.replace("70", "seventy"))).columns, manifest_root(s)
    )
    assert verdict.kind == "schema"
    assert verdict.changes == ("column 'age' is string, was integer",)
    message = verdict.message("cohort")
    assert "version 1" in message and "medfed node datasets new-version cohort" in message
    assert "seventy" not in message
    # a blank turns an integer column into floats
    blank = _store(path, ROWS.replace("55,f,340", "55,f,"))
    assert record.check("cohort", blank.columns, manifest_root(blank)).changes == (
        "column 'time' is float, was integer",
    )
    renamed = _store(path, ROWS.replace("sex", "gender"))
    assert set(record.check("cohort", renamed.columns, manifest_root(renamed)).changes) == {
        "column 'sex' removed",
        "column 'gender' added (string)",
    }
    assert stat.S_IMODE(record.path.stat().st_mode) == 0o600


def test_schema_changes_sees_reordered_columns(tmp_path: Path) -> None:
    a = _store(tmp_path / "a.csv", ROWS).columns
    b = _store(tmp_path / "b.csv", "sex,age,time\nm,61,120\n").columns
    assert schema_changes(a, b) == ["columns reordered"]
    assert schema_changes(a, a) == []


def test_new_version_cli_accepts_the_schema_and_the_next_check_is_a_content_change(
    tmp_path: Path,
) -> None:
    data = tmp_path / "cohort.csv"
    first = _store(data, ROWS)
    config = tmp_path / "node.toml"
    config.write_text(
        'hub_url = "http://127.0.0.1:9"\nsecret = "mfn_x"\ndata_dir = "state"\n\n'
        f'[[datasets]]\nname = "cohort"\npath = "{data}"\n'
    )
    record = DriftRecord(tmp_path / "state")
    record.registered(
        "cohort", columns=first.columns, manifest_root=manifest_root(first), dataset_id=3, version=2
    )
    changed = _store(data, ROWS.replace("70", "seventy"))
    assert _check(record, changed) == "schema"
    runner = CliRunner()
    shown = runner.invoke(app, ["node", "datasets", "status", "--config", str(config)])
    assert shown.exit_code == 0, shown.output
    assert "schema changed" in shown.output and "refused" in shown.output
    result = runner.invoke(app, ["node", "datasets", "new-version", "cohort", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "column 'age' is string, was integer" in result.output
    assert _check(record, changed) == "content"  # the next start registers the next version
    assert json.loads(record.path.read_text())["cohort"]["version"] == 2
    unknown = runner.invoke(app, ["node", "datasets", "new-version", "other", "-c", str(config)])
    assert isinstance(unknown.exception, NotFound)  # main() prints it as one red line
    assert "no dataset 'other'" in str(unknown.exception)


def test_the_outbox_keeps_results_until_removed_and_survives_a_new_instance(
    tmp_path: Path,
) -> None:
    box = Outbox(tmp_path / "outbox")
    body = b'{"lease_id":"abc","status":"done"}'
    box.put(12, "abc", body, {"run_id": 12, "sent_sha256": "x"})
    box.put(3, "def", b"{}", {"run_id": 3})
    (tmp_path / "outbox" / ".12-abc.json.tmp").write_text("half a wri")  # a crashed write
    again = Outbox(tmp_path / "outbox")
    pending = again.pending()
    assert [(p.run_id, p.lease_id) for p in pending] == [(3, "def"), (12, "abc")]
    assert pending[1].body == body and pending[1].entry == {"run_id": 12, "sent_sha256": "x"}
    assert sorted(again.run_ids()) == [3, 12]
    assert stat.S_IMODE(pending[1].path.stat().st_mode) == 0o600
    again.remove(pending[0])
    assert [p.run_id for p in Outbox(tmp_path / "outbox").pending()] == [12]
    with pytest.raises(BadRequest, match="lease id"):
        box.put(1, "../x", b"{}", {})


def test_pandas_frames_keep_working_without_a_file() -> None:
    store = TableStore(pd.DataFrame({"age": [1, 2]}))
    assert store.row_count == 2
