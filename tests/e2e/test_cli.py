"""The ``medfed`` command against a real hub: help everywhere, results, one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medfed.cli.main import app
from medfed.sdk.client import Client
from medfed.testing.demo import split_gbsg2
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e


def medfed(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medfed.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def _commands() -> list[list[str]]:
    import typer.main

    paths: list[list[str]] = [[]]
    group = typer.main.get_command(app)

    def walk(command: object, prefix: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(group, [])
    return paths


def test_every_command_has_help() -> None:
    commands = _commands()
    assert ["task", "run"] in commands and ["node", "start"] in commands
    assert ["hub", "init"] in commands and ["datasets", "list"] in commands
    runner = CliRunner()
    for path in commands:
        done = runner.invoke(app, [*path, "--help"])
        assert done.exit_code == 0, (path, done.output)
        assert "Usage" in done.output


def test_task_run_prints_the_pooled_result(
    gbsg2_federation: Federation, gbsg2: pd.DataFrame
) -> None:
    env = {
        "MEDFED_URL": gbsg2_federation.hub.url,
        "MEDFED_TOKEN": gbsg2_federation.researcher.token or "",
    }
    done = medfed("task", "run", "count", "-d", "gbsg2", "--where", "age >= 50", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["n"] == int((gbsg2.age >= 50).sum())
    listed = medfed("datasets", "list", env=env)
    assert listed.returncode == 0 and "hospital-a" in listed.stdout


def test_errors_are_one_clear_line_without_traceback(gbsg2_federation: Federation) -> None:
    env = {
        "MEDFED_URL": gbsg2_federation.hub.url,
        "MEDFED_TOKEN": gbsg2_federation.researcher.token or "",
    }
    cases = {
        ("task", "run", "nosuch", "-d", "gbsg2"): "unknown algorithm 'nosuch'",
        ("task", "run", "mean", "-d", "gbsg2", "-c", "agee"): "agee",
        ("task", "run", "count", "-d", "nosuch"): "dataset 'nosuch' not found",
        ("task", "run", "count", "-d", "gbsg2", "--where", "age >>= 3"): "filter",
    }
    for args, expected in cases.items():
        done = medfed(*args, env=env)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert expected in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    bad_token = medfed("datasets", "list", env={**env, "MEDFED_TOKEN": "mfu_wrong"})
    assert bad_token.returncode == 1 and "invalid token" in bad_token.stderr


def test_hub_init_refuses_a_second_time_and_serve_refuses_the_default_secret(
    tmp_path: Path,
) -> None:
    env = {"MEDFED_ADMIN_PASSWORD": "correct horse battery"}
    first = medfed("hub", "init", "--data-dir", str(tmp_path), "--dev", env=env)
    assert first.returncode == 0, first.stderr
    assert "mfu_" in first.stdout
    second = medfed("hub", "init", "--data-dir", str(tmp_path), "--dev", env=env)
    assert second.returncode == 1 and "initialized already" in second.stderr
    serve = medfed("hub", "serve", "--data-dir", str(tmp_path), env={"MEDFED_DEV_MODE": "0"})
    assert serve.returncode == 1 and "MEDFED_SECRET_KEY" in serve.stderr


def test_a_waiting_node_is_woken_by_a_new_run_not_by_its_poll_interval(
    tmp_path: Path, gbsg2: pd.DataFrame
) -> None:
    shares = {name: {"gbsg2": s} for name, s in split_gbsg2(gbsg2).items()}
    # the hub re-reads the database only every 10 minutes and each node's long poll lasts
    # two: without a wake-up no node could see the run for about 120 s
    slow = {"MEDFED_RECHECK_SECONDS": "600", "MEDFED_LONG_POLL_SECONDS": "120"}
    long_polls = "poll_wait_seconds = 120"
    with Federation(tmp_path, shares, hub_env=slow, node_config=long_polls) as fed:
        time.sleep(1.0)  # every node is now idle inside its long poll
        started = time.monotonic()
        result = fed.researcher.tasks.run("noop", datasets=["gbsg2"], progress=False)
        elapsed = time.monotonic() - started
    assert result.result.nodes == 3
    assert elapsed < 60.0, f"noop took {elapsed:.2f} s; nodes were not woken"


def test_task_run_prints_a_summary_and_saves_a_kaplan_meier_plot(
    gbsg2_federation: Federation, tmp_path: Path
) -> None:
    token = gbsg2_federation.researcher.token or ""
    env = {"MEDFED_URL": gbsg2_federation.hub.url, "MEDFED_TOKEN": token}
    png = tmp_path / "km.png"
    args = ["-p", "duration=time", "-p", "event=cens", "-p", "group=horTh"]
    done = medfed("task", "run", "km", "-d", "gbsg2", *args, "--plot", str(png), env=env)
    assert done.returncode == 0, done.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Kaplan-Meier" in done.stdout and f"plot saved to {png}" in done.stdout


def test_list_options_take_repeats_or_comma_lists(gbsg2_federation: Federation) -> None:
    env = {
        "MEDFED_URL": gbsg2_federation.hub.url,
        "MEDFED_TOKEN": gbsg2_federation.researcher.token or "",
    }
    repeated = medfed(
        "task", "run", "mean", "-d", "gbsg2", "-c", "age", "-c", "tsize", "--json", env=env
    )
    commas = medfed("task", "run", "mean", "-d", "gbsg2", "-c", "age,tsize", "--json", env=env)
    assert repeated.returncode == 0 and commas.returncode == 0, repeated.stderr + commas.stderr
    assert json.loads(repeated.stdout) == json.loads(commas.stdout)
    glm = ["task", "run", "glm", "-d", "gbsg2", "-p", "outcome=time", "--json"]
    by_option = medfed(*glm, "--covariates", "age,tsize", env=env)
    by_param = medfed(*glm, "-p", "covariates=age,tsize", env=env)
    assert by_option.returncode == 0 and by_param.returncode == 0, (
        by_option.stderr + by_param.stderr
    )
    assert json.loads(by_option.stdout) == json.loads(by_param.stdout)


def test_datasets_list_access_list_and_a_readable_audit_trail(
    gbsg2_federation: Federation,
) -> None:
    fed = gbsg2_federation
    env = {"MEDFED_URL": fed.hub.url, "MEDFED_TOKEN": fed.researcher.token or ""}
    listed = medfed("datasets", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "state" in listed.stdout and listed.stdout.count("released") >= 3
    applications = medfed("access", "list", env=env)
    assert applications.returncode == 0, applications.stderr
    assert "application(s)" in applications.stdout and "approved" in applications.stdout
    none_submitted = medfed("access", "list", "--state", "submitted", env=env)
    assert none_submitted.returncode == 0 and "0 application(s)" in none_submitted.stdout
    dataset = fed.researcher.datasets.list()[0]
    trail = medfed("audit", "trail", "--dataset", str(dataset.id), env=env)
    assert trail.returncode == 0, trail.stderr
    assert "dataset.register" in trail.stdout and "{" not in trail.stdout
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", trail.stdout), trail.stdout


def test_a_user_without_a_project_is_told_to_use_the_project_option(
    gbsg2_federation: Federation,
) -> None:
    fed = gbsg2_federation
    organization = fed.admin.organizations.list()[0].id
    password = "a long enough password"
    fed.admin.users.create("no-project", password, organization_id=organization)
    lonely = Client.login(fed.hub.url, "no-project", password)
    env = {"MEDFED_URL": fed.hub.url, "MEDFED_TOKEN": lonely.token or ""}
    done = medfed("task", "run", "count", "-d", "gbsg2", env=env)
    assert done.returncode == 1, done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert "you belong to no project" in line and "--project ID" in line, line
    assert "project=ID" not in line
