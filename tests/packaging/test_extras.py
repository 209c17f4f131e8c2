"""``pip install medfed`` and ``medfed[node]`` from a freshly built wheel, in fresh venvs.

Once per session: the working tree's ``pyproject.toml``, ``README.md`` and ``src/`` are
copied aside and built into a wheel (``pip wheel --no-deps``); two venvs without pip or
system site-packages get it installed at the same time by this interpreter's pip
(``pip --python VENV install --find-links DIST WHEEL[extras]``, the dependencies from the
package index). The bare install must run the hub and answer every command that needs an
extra with one line naming it; the node install must ingest a table.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from medfed.testing.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(600)  # the session's installs run in the first test's setup


@dataclass(frozen=True)
class Venvs:
    bare: Path
    node: Path
    work: Path


def _env(work: Path) -> dict[str, str]:
    """The outer environment without its venv and medfed's settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MEDFED_") and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    env["MEDFED_CONFIG_DIR"] = str(work / "config")
    return env


def _wheel(work: Path) -> Path:
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    # setuptools of this venv builds it when there is one (no build env to install)
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    args = ["wheel", "-q", "--no-deps", *isolation, "-w", str(work / "dist"), str(source)]
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, timeout=300, cwd=work)
    (wheel,) = (work / "dist").glob("medfed-*.whl")
    return wheel


@pytest.fixture(scope="session")
def venvs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venvs]:
    work = tmp_path_factory.mktemp("packaging")
    wheel = _wheel(work)
    installs: list[subprocess.Popen[str]] = []
    for name, extras in (("bare", ""), ("node", "[node]")):
        venv = work / name
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
        pip += ["-q", "--no-compile", "--find-links", str(wheel.parent), f"{wheel}{extras}"]
        installs.append(
            subprocess.Popen(pip, env=_env(work), cwd=work, stderr=subprocess.PIPE, text=True)
        )
    for install in installs:
        _, err = install.communicate(timeout=600)
        assert install.returncode == 0, err[-3000:]
    yield Venvs(work / "bare", work / "node", work)


def medfed(venv: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "medfed"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**_env(cwd), **env},
        timeout=120,
    )


def _node_files(folder: Path) -> tuple[Path, Path, Path]:
    """A node.toml, a 60-row CSV export and its de-identification strategy."""
    folder.mkdir(exist_ok=True)
    config = folder / "node.toml"
    config.write_text(
        'hub_url = "http://127.0.0.1:9"\nsecret = "mfn_packaging-test-secret"\n'
        'data_dir = "var"\n[policy]\nmin_cell_count = 5\n'
    )
    rows = [f"{i:04d},{30 + i % 40},{'MF'[i % 2]},{i * 1.5}" for i in range(60)]
    raw = folder / "raw.csv"
    raw.write_text("patient_id,age,sex,value\n" + "\n".join(rows) + "\n")
    strategy = folder / "strategy.toml"
    strategy.write_text(
        "[columns]\n"
        'patient_id = { rule = "pseudonymize", prefix = "P-" }\n'
        'age = { rule = "generalize", bins = [0, 40, 50, 60], top = 70 }\n'
        'sex = "keep"\nvalue = "keep"\n'
        '[k_anonymity]\nquasi_identifiers = ["age", "sex"]\nk = 5\non_violation = "suppress"\n'
    )
    return config, raw, strategy


def test_the_bare_install_has_no_extra_and_runs_the_hub(venvs: Venvs) -> None:
    extras = ("duckdb", "pyarrow", "pydicom", "torch", "psycopg", "lifelines")
    probe = f"import importlib.util as u; print([m for m in {extras!r} if u.find_spec(m)])"
    found = subprocess.run(
        [str(venvs.bare / "bin" / "python"), "-c", probe], capture_output=True, text=True
    )
    assert found.stdout.strip() == "[]", found.stdout + found.stderr
    for args in (["--help"], ["hub", "serve", "--help"], ["node", "start", "--help"]):
        shown = medfed(venvs.bare, *args, cwd=venvs.work)
        assert shown.returncode == 0, shown.stderr
        assert "Usage" in shown.stdout and "<bool>" not in shown.stdout
    hub = venvs.work / "hub"
    init = medfed(
        venvs.bare,
        "hub",
        "init",
        "--data-dir",
        str(hub),
        "--dev",
        cwd=venvs.work,
        MEDFED_ADMIN_PASSWORD="a long enough password",
    )
    assert init.returncode == 0, init.stderr
    assert "mfu_" in init.stdout
    port = free_port()
    serve_args = ["hub", "serve", "--data-dir", str(hub), "--dev", "--port", str(port)]
    serve = subprocess.Popen(
        [str(venvs.bare / "bin" / "medfed"), *serve_args],
        cwd=venvs.work,
        env=_env(venvs.work),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, status = time.monotonic() + 240, 0
        while time.monotonic() < deadline and serve.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code
                break
            except httpx.TransportError:
                time.sleep(0.3)
        assert status == 200, serve.stderr.read() if serve.poll() is not None else "no answer"
    finally:
        serve.terminate()
        serve.wait(timeout=30)


@pytest.mark.parametrize(
    ("extra", "command"),
    [
        ("node", ["node", "start", "--config", "{node}"]),
        ("node", ["node", "ingest", "table", "{raw}", "-d", "trial", "-s", "{strategy}"]),
        ("demo", ["demo"]),
        ("postgres", ["hub", "init", "--dev", "--database-url", "postgresql+psycopg://u@h/db"]),
    ],
    ids=["node-start", "ingest-table", "demo", "postgres-url"],
)
def test_the_bare_install_names_the_extra_in_one_line(
    venvs: Venvs, extra: str, command: list[str]
) -> None:
    config, raw, strategy = _node_files(venvs.work / "bare-node")
    paths = {"node": str(config), "raw": str(raw), "strategy": str(strategy)}
    args = [arg.format(**paths) for arg in command]
    if "ingest" in args:
        args += ["-c", str(config)]
    done = medfed(venvs.bare, *args, cwd=venvs.work, MEDFED_ADMIN_PASSWORD="a long password")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: this needs medfed[{extra}]: pip install 'medfed[{extra}]'")


def test_the_node_install_ingests_a_table_and_still_wants_the_demo_extra(venvs: Venvs) -> None:
    folder = venvs.work / "node-site"
    config, raw, strategy = _node_files(folder)
    done = medfed(
        venvs.node,
        *("node", "ingest", "table", str(raw), "-d", "trial", "-s", str(strategy)),
        *("-c", str(config)),
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr
    assert (folder / "var" / "datasets" / "trial" / "trial.parquet").is_file()
    assert "[[datasets]]" in done.stdout
    demo = medfed(venvs.node, "demo", cwd=folder)
    assert demo.returncode == 1
    assert demo.stderr.strip() == (
        "error: this needs medfed[demo]: pip install 'medfed[demo]' (no module 'lifelines')"
    )
