"""The README's walkthrough, run exactly as written: real hub and node processes, real CLI.

The walkthrough is every fenced block of ``README.md`` whose info string is
``sh walkthrough`` (shell) or ``python walkthrough`` (run as ``python - <<'EOF'``), in the
order they appear. They become one bash script (``set -euo pipefail``: the first command
that fails stops it, and the ERR trap names it), run in an empty temporary folder with the
test's virtual environment first on ``PATH`` (an activated venv). Only the environment
differs from a reader's: a free port in ``MEDFED_PORT`` (the README keeps one that is set)
and the login file under the test's folder (``MEDFED_CONFIG_DIR``). The script runs in
its own process group, which the test kills at the end whatever happened, so the
background hub and node never outlive it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medfed.testing.processes import free_port

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
PNG = b"\x89PNG\r\n\x1a\n"


def walkthrough_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of each block marked ``walkthrough``, in README order."""
    blocks = []
    for match in FENCE.finditer(text):
        words = match.group(1).split()
        if len(words) == 2 and words[1] == "walkthrough":
            if words[0] not in ("sh", "python"):
                raise AssertionError(f"walkthrough block in {words[0]!r}: only sh or python")
            blocks.append((words[0], match.group(2)))
    return blocks


def script_of(blocks: list[tuple[str, str]]) -> str:
    lines = [
        "set -euo pipefail",
        "trap 'echo \"walkthrough: command failed (exit $?): $BASH_COMMAND\" >&2' ERR",
    ]
    for language, body in blocks:
        if language == "python":
            assert "PYTHON_WALKTHROUGH" not in body
            lines += ["python - <<'PYTHON_WALKTHROUGH'", body.rstrip("\n"), "PYTHON_WALKTHROUGH"]
        else:
            lines.append(body.rstrip("\n"))
    return "\n".join(lines) + "\n"


def test_the_walkthrough_blocks_are_found_in_order() -> None:
    blocks = walkthrough_blocks(README.read_text())
    text = "\n".join(body for _, body in blocks)
    order = [
        "medfed hub init",
        "medfed hub serve",
        "medfed nodes create",
        "medfed node ingest table",
        "medfed node start",
        "medfed datasets describe",
        "medfed datasets publish",
        "medfed access apply",
        "medfed access approve",
        "medfed task run km",
        "medfed task run glm",
        "medfed audit verify",
        "medfed.Client.login",
        "kill $(jobs -p)",
    ]
    positions = [text.find(step) for step in order]
    assert -1 not in positions, [s for s, p in zip(order, positions, strict=True) if p == -1]
    assert positions == sorted(positions)
    assert "pip install" not in text  # installing is the reader's step, not the test's


@pytest.mark.timeout(1200)
def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    script = script_of(walkthrough_blocks(README.read_text()))
    work = tmp_path / "tour"
    work.mkdir()
    (tmp_path / "walkthrough.sh").write_text(script)
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDFED_")},
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(Path(venv_bin).parent),
        "MEDFED_PORT": str(free_port()),
        "MEDFED_CONFIG_DIR": str(tmp_path / "config"),
        "NO_COLOR": "1",
    }
    log = tmp_path / "walkthrough.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["bash", "-x", str(tmp_path / "walkthrough.sh")],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=900)  # minutes on a quiet machine; CI may be loaded
        except subprocess.TimeoutExpired:
            code = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the hub and node, if still there
            process.wait()
    elapsed = time.monotonic() - started
    output = log.read_text(errors="replace")
    logs = "".join(
        f"\n--- {p.relative_to(work)} ---\n{p.read_text(errors='replace')[-3000:]}"
        for p in (work / "hub.log", work / "hospital-a" / "node.log")
        if p.exists()
    )
    assert code == 0, f"walkthrough exit {code} after {elapsed:.0f} s\n{output[-8000:]}{logs}"
    plot = work / "km.png"
    assert plot.read_bytes()[:8] == PNG, "km.png is not a PNG"
    assert "hub at http://127.0.0.1:" in output
    searched = output.split("+ medfed datasets search", 1)[1].split("\n+ ", 1)[0]
    assert "1 dataset(s)" in searched  # found by a word of the description it was given
    print(f"walkthrough: {elapsed:.1f} s")
