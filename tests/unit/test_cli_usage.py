"""The ``medfed`` command's own usage: one-line errors, tidy help, list options.

Every call goes through ``medfed.cli.main.main`` in this process (what the console script
runs), with stdout and stderr captured; none of these reach a hub.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medfed.cli import common
from medfed.cli.main import command, main
from medfed.cli.task import _parse_param


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
        raise SystemExit(0)  # main returns normally on success
    out, err = capsys.readouterr()
    code = done.value.code
    return (code if isinstance(code, int) else 1), out, err


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(common, "CREDENTIALS", tmp_path / "credentials.json")
    for name in ("MEDFED_URL", "MEDFED_TOKEN"):
        monkeypatch.delenv(name, raising=False)


BAD = [
    (["nosuch"], "No such command 'nosuch'", "medfed --help"),
    (["--bogus"], "No such option: --bogus", "medfed --help"),
    (["task", "rn"], "Did you mean 'run'?", "medfed task --help"),
    (["task", "run"], "Missing argument 'algorithm'", "medfed task run --help"),
    (["task", "run", "count"], "Missing option '--dataset'", "medfed task run --help"),
    (["task", "run", "count", "-d"], "'-d' requires an argument", "medfed task run --help"),
    (["task", "run", "count", "-d", "x", "--bogus"], "No such option", "medfed task run --help"),
    (["task", "run", "count", "-d", "x", "surplus"], "unexpected extra", "medfed task run --help"),
    (["task", "run", "count", "-d", "x", "-p", "nokey"], "use KEY=VALUE", "task run --help"),
    (["task", "run", "count", "-d", "x", "--project", "one"], "'--project'", "task run --help"),
    (["access", "apply", "-p", "1", "-d", "3,x", "--purpose", "p"], "'x' is not an id", "apply"),
    (["access", "list", "--state", "pending"], "'pending' is not one of", "access list --help"),
    (["access", "approve"], "Missing argument", "medfed access approve --help"),
    (["audit", "trail"], "Missing option '--dataset'", "medfed audit trail --help"),
    (["datasets", "show", "three"], "valid integer", "medfed datasets show --help"),
    (["hub", "serve", "--port", "http"], "'--port'", "medfed hub serve --help"),
    (["hub", "serve", "--workers", "0"], "'--workers'", "medfed hub serve --help"),
    (["users", "create", "bob", "--org"], "'--org' requires an argument", "users create --help"),
    (["node", "start"], "Missing option '--config'", "medfed node start --help"),
    (["node", "ingest", "dicom", "src"], "Missing option", "medfed node ingest dicom --help"),
]


@pytest.mark.parametrize(("args", "says", "points_to"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_a_usage_error_is_one_line_with_a_hint_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], says: str, points_to: str
) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and says in lines[0], lines[0]
    assert points_to in lines[0] and lines[0].endswith("--help'."), lines[0]
    assert "Traceback" not in err and out == ""


def test_an_error_from_medfed_itself_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "datasets", "list")
    assert code == 1
    assert err.strip().splitlines() == [
        "error: no hub credentials: run 'medfed login --url URL' or set MEDFED_URL and MEDFED_TOKEN"
    ]


def test_a_group_without_a_command_shows_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "task")
    assert code == 0 and "run" in out and err == ""


def _paths() -> list[list[str]]:
    paths: list[list[str]] = []

    def walk(cmd: object, prefix: list[str]) -> None:
        paths.append(prefix)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*prefix, name])

    walk(command(), [])
    return paths


def test_help_shows_no_bool_on_flags_anywhere(capsys: pytest.CaptureFixture[str]) -> None:
    paths = _paths()
    assert ["access", "list"] in paths and ["task", "run"] in paths
    for path in paths:
        code, out, err = run(capsys, *path, "--help")
        assert code == 0, (path, err)
        assert "Usage" in out and "<bool>" not in out, (path, out)
    _, out, _ = run(capsys, "task", "run", "--help")
    assert "--json " in out and "comma list" in out and "<str>…" in out


def test_list_options_take_repeats_and_comma_lists() -> None:
    assert common.split_commas(["age", "tsize,pnodes", " grade , ", ""]) == [
        "age",
        "tsize",
        "pnodes",
        "grade",
    ]
    assert common.ids(["3,4", "7"], "--dataset") == [3, 4, 7]


def test_a_list_parameter_takes_a_comma_list_in_param() -> None:
    lists = {"covariates", "categorical"}
    assert _parse_param("covariates=age,tsize", lists) == ("covariates", ["age", "tsize"])
    assert _parse_param('covariates=["age"]', lists) == ("covariates", ["age"])
    assert _parse_param("categorical=horTh", lists) == ("categorical", ["horTh"])
    assert _parse_param("outcome=time", lists) == ("outcome", "time")
    assert _parse_param("alpha=0.1", lists) == ("alpha", 0.1)
    assert _parse_param("label=a,b", lists) == ("label", "a,b")  # not a list parameter
