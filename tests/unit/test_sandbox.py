"""The bubblewrap sandbox: its command line, its limits and every escape a plan tries.

Everything runs for real: ``bwrap`` from the Debian package, ``prlimit`` and ``setpriv``
from util-linux, the agent's own interpreter inside. The escape tests run plans in the
sandboxed :class:`PlanWorker` directly (one warm child for most of them): each plan does
the forbidden thing at import and, should it get through, raises ``SystemExit("escaped
…")`` — so a test sees both that the plan failed and *why* (the detail the node logs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from medfed.common.errors import PolicyRefused
from medfed.node.config import Policy
from medfed.node.executors.plan_process import REASONS, PlanFailed, PlanWorker
from medfed.node.executors.sandbox import (
    SANDBOX_UID,
    SandboxLimits,
    SandboxUnavailable,
    read_output,
    sandbox_command,
    sandboxed_popen,
)
from medfed.node.runlog import RunLog

SECRET = "mfn_do_not_leak_4711"
VALUE = "PATIENT-VALUE-0815"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the real-uid drop needs root")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node's folder as an agent has it: config, secret, datasets, approvals, logs."""
    folder = tmp_path_factory.mktemp("node")
    (folder / "node.toml").write_text(f'hub_url = "http://127.0.0.1:8000"\nsecret = "{SECRET}"\n')
    (folder / "node.secret").write_text(SECRET)
    (folder / "data").mkdir()
    (folder / "data" / "other.csv").write_text(f"id,value\n1,{VALUE}\n")
    (folder / "state" / "plans").mkdir(parents=True)
    (folder / "state" / "plans" / "approvals.json").write_text("{}")
    (folder / "state" / "runs.jsonl").write_text("")
    return folder


@pytest.fixture(scope="module")
def worker(node: Path) -> Iterator[PlanWorker]:
    limits = SandboxLimits(memory_mb=3072, cpu_seconds=600, processes=64, file_mb=1)
    plan_worker = PlanWorker(limits=limits, scratch_root=node / "state" / "jobs")
    yield plan_worker
    plan_worker.close()


def _plan(worker: PlanWorker, folder: Path, code: str) -> PlanFailed:
    """Run ``code`` as a plan's top level; the :class:`PlanFailed` it must end in."""
    folder.mkdir(parents=True)
    (folder / "plan.py").write_text(code + "\nraise SystemExit('escaped: ' + repr(got))\n")
    (folder / "job.json").write_text("{}")
    with pytest.raises(PlanFailed) as failed:
        worker.run(folder, timeout=120)
    exc = failed.value
    assert str(exc) in REASONS.values()  # what the researcher sees: a fixed text
    assert SECRET not in str(exc) and VALUE not in str(exc)
    assert "escaped" not in exc.detail, exc.detail
    return exc


# -- the command line ----------------------------------------------------------------


def test_the_command_line_isolates_and_limits(tmp_path: Path) -> None:
    limits = SandboxLimits(memory_mb=100, cpu_seconds=7, processes=9, file_mb=3, output_mb=4)
    argv = sandbox_command(["python", "-V"], scratch=tmp_path, limits=limits, data_fds=(5, 6))
    assert Path(argv[0]).name == "prlimit"
    assert f"--as={100 << 20}" in argv and "--cpu=7:8" in argv and "--nproc=9" in argv
    assert f"--fsize={3 << 20}" in argv and "--core=0" in argv
    bwrap = argv.index("--") + 1
    assert Path(argv[bwrap]).name == "bwrap"
    assert "--unshare-net" in argv or "--unshare-all" in argv
    assert "--die-with-parent" in argv and "--new-session" in argv
    assert argv[argv.index("--tmpfs") + 1] == "/tmp" and argv[argv.index("--proc") + 1] == "/proc"
    binds = [argv[i + 1] for i, a in enumerate(argv) if a == "--bind"]
    assert binds == [str(tmp_path)]  # the only writable path
    ro = [argv[i + 1] for i, a in enumerate(argv) if a == "--ro-bind"]
    assert "/usr" in ro and "/etc" not in ro and sys.base_prefix in ro
    assert argv[-2:] == ["python", "-V"]
    if os.geteuid() == 0:
        assert f"--reuid={SANDBOX_UID}" in argv and "--no-new-privs" in argv


def test_policy_keys_give_the_limits_and_bad_values_are_named() -> None:
    policy = Policy(sandbox_memory_mb=4096, sandbox_cpu_seconds=60, sandbox_processes=32)
    limits = SandboxLimits.from_policy(policy)
    assert (limits.memory_mb, limits.cpu_seconds, limits.processes) == (4096, 60, 32)
    assert Policy().sandbox == "bwrap"
    with pytest.raises(ValueError, match="sandbox"):
        Policy.model_validate({"sandbox": "docker"})
    with pytest.raises(ValueError, match="file_mb"):
        SandboxLimits(file_mb=0)


def _sandboxed(tmp_path: Path, code: str, **limits: int) -> subprocess.CompletedProcess[bytes]:
    child = sandboxed_popen(
        [sys.executable, "-c", code],
        scratch=tmp_path,
        kind="bwrap",
        limits=SandboxLimits(**limits),
        env={"PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = child.communicate(timeout=120)
    return subprocess.CompletedProcess(child.args, child.wait(), out, err)


def test_inside_it_runs_as_nobody_with_only_its_scratch_writable(tmp_path: Path) -> None:
    code = (
        "import os; print(os.getuid(), sorted(os.listdir('/')), os.getcwd());"
        "open('mine.txt', 'w').write('ok')"
    )
    done = _sandboxed(tmp_path, code)
    assert done.returncode == 0, done.stderr
    uid, listing, cwd = done.stdout.decode().split(" ", 1)[0], *done.stdout.decode().rsplit(" ", 1)
    assert int(uid) == (SANDBOX_UID if os.geteuid() == 0 else int(uid))
    assert "home" not in listing and "var" not in listing and "srv" not in listing
    assert cwd.strip() == str(tmp_path.resolve())
    assert (tmp_path / "mine.txt").read_text() == "ok"


def test_cpu_time_past_the_limit_ends_the_process(tmp_path: Path) -> None:
    done = _sandboxed(tmp_path, "while True: pass", cpu_seconds=1)
    assert done.returncode in (128 + 24, 128 + 9)  # SIGXCPU, then SIGKILL at the hard limit


@root_only
def test_the_process_limit_holds_for_root_agents(tmp_path: Path) -> None:
    code = (
        "import os, time\n"
        "kids = 0\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(2); os._exit(0)\n"
        "        kids += 1\n"
        "except BlockingIOError:\n"
        "    print('stopped at', kids)\n"
    )
    done = _sandboxed(tmp_path, code, processes=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"stopped at"), done.stdout
    assert int(done.stdout.split()[-1]) < 20


def test_without_bubblewrap_the_node_refuses_plan_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDFED_BWRAP", str(tmp_path / "no-such-bwrap"))
    with pytest.raises(SandboxUnavailable, match="bwrap is not installed"):
        sandboxed_popen(["true"], scratch=tmp_path, kind="bwrap", limits=SandboxLimits())
    worker = PlanWorker(scratch_root=tmp_path / "jobs")
    with pytest.raises(PolicyRefused, match="bubblewrap"):
        worker.warm_up()
    assert not list((tmp_path / "jobs").iterdir())  # nothing started, nothing left


def test_sandbox_none_runs_bare_and_says_so_in_the_run_log(tmp_path: Path, node: Path) -> None:
    runlog = RunLog(tmp_path / "runs.jsonl")
    worker = PlanWorker(sandbox="none", scratch_root=tmp_path / "jobs", runlog=runlog)
    job = tmp_path / "job"
    job.mkdir()
    (job / "plan.py").write_text(f"raise SystemExit(open({str(node / 'node.secret')!r}).read())")
    (job / "job.json").write_text("{}")
    try:
        with pytest.raises(PlanFailed) as failed:
            worker.run(job, timeout=120)
    finally:
        worker.close()
    assert SECRET in failed.value.detail and SECRET not in str(failed.value)  # unsandboxed
    assert [e["alarm"] for e in runlog.entries()] == ["sandbox"]


def test_read_output_refuses_links_and_oversized_files(tmp_path: Path, node: Path) -> None:
    (tmp_path / "result.json").write_bytes(b"x" * 100)
    (tmp_path / "link.json").symlink_to(node / "node.secret")
    assert read_output(tmp_path / "result.json", 100) == b"x" * 100
    with pytest.raises(ValueError, match="output limit"):
        read_output(tmp_path / "result.json", 99)
    with pytest.raises(OSError):
        read_output(tmp_path / "link.json", 100)


# -- escapes through the sandboxed plan process ---------------------------------------


@pytest.mark.parametrize(
    "target", ["node.toml", "node.secret", "data/other.csv", "state/plans/approvals.json"]
)
def test_a_plan_cannot_read_the_nodes_files(
    worker: PlanWorker, node: Path, tmp_path: Path, target: str
) -> None:
    exc = _plan(worker, tmp_path / "job", f"got = open({str(node / target)!r}).read()")
    assert exc.kind == "forbidden" and exc.detail.startswith("FileNotFoundError")


def test_a_plan_cannot_write_outside_its_scratch(
    worker: PlanWorker, node: Path, tmp_path: Path
) -> None:
    targets = (node / "state" / "x", Path(sys.prefix) / "x", Path("/usr/x"))
    for i, target in enumerate(targets):
        exc = _plan(worker, tmp_path / f"job{i}", f"got = open({str(target)!r}, 'w')")
        assert exc.kind == "forbidden", exc.detail
    assert not (node / "state" / "x").exists() and not (Path(sys.prefix) / "x").exists()


@pytest.mark.parametrize("address", [("127.0.0.1", 5432), ("127.0.0.1", 8000), ("1.1.1.1", 53)])
def test_a_plan_has_no_network(
    worker: PlanWorker, tmp_path: Path, address: tuple[str, int]
) -> None:
    code = f"import socket\ngot = socket.create_connection({address!r}, timeout=5)"
    exc = _plan(worker, tmp_path / "job", code)
    assert exc.kind == "forbidden"
    assert "ConnectionRefusedError" in exc.detail or "unreachable" in exc.detail


def test_a_plan_cannot_read_the_agents_proc(worker: PlanWorker, tmp_path: Path) -> None:
    code = f"got = open('/proc/{os.getpid()}/environ', 'rb').read()"
    exc = _plan(worker, tmp_path / "job", code)
    assert exc.kind == "forbidden" and exc.detail.startswith("FileNotFoundError")
    job = tmp_path / "job2"
    job.mkdir()
    (job / "plan.py").write_text(
        "import os\nraise ValueError(len([p for p in os.listdir('/proc') if p.isdigit()]))"
    )
    (job / "job.json").write_text("{}")
    with pytest.raises(PlanFailed) as failed:
        worker.run(job, timeout=120)
    assert failed.value.kind == "exception"
    assert int(failed.value.detail.split()[-1]) <= 3  # bwrap's init and the plan process


def test_a_plan_using_ctypes_meets_the_same_walls(
    worker: PlanWorker, node: Path, tmp_path: Path
) -> None:
    code = f"""
import ctypes, ctypes.util, errno, socket, struct
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
fd = libc.open({str(node / "node.secret").encode()!r}, 0)
if fd < 0:
    opened = ctypes.get_errno()
s = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
addr = struct.pack("<HH4s8x", socket.AF_INET, socket.htons(5432), socket.inet_aton("127.0.0.1"))
rc = libc.connect(s, addr, len(addr))
if fd < 0 and rc < 0:
    raise OSError(ctypes.get_errno(), "open: " + errno.errorcode[opened])
got = (fd, rc)
"""
    exc = _plan(worker, tmp_path / "job", code)
    assert exc.kind == "forbidden" and "ENOENT" in exc.detail


def test_memory_past_the_limit_fails_with_a_fixed_reason(
    worker: PlanWorker, tmp_path: Path
) -> None:
    exc = _plan(worker, tmp_path / "job", "got = bytearray(4 << 30)")
    assert exc.kind == "memory" and str(exc) == REASONS["memory"]


def test_a_file_past_the_size_limit_fails(worker: PlanWorker, tmp_path: Path) -> None:
    exc = _plan(worker, tmp_path / "job", "got = open('big.bin', 'wb').write(b'x' * (2 << 20))")
    assert exc.kind == "file_size" and "File too large" in exc.detail


@root_only
def test_a_fork_bomb_is_bounded(node: Path, tmp_path: Path) -> None:
    limits = SandboxLimits(processes=32)
    fresh = PlanWorker(fresh_process=True, limits=limits, scratch_root=node / "state" / "jobs")
    code = (
        "import os, time\n"
        "for _ in range(1000):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(30); os._exit(0)\n"
        "got = 'all forked'"
    )
    try:
        exc = _plan(fresh, tmp_path / "job", code)
    finally:
        fresh.close()
    assert exc.kind == "processes" and str(exc) == REASONS["processes"]


def test_a_plans_exception_message_stays_at_the_node(worker: PlanWorker, tmp_path: Path) -> None:
    exc = _plan(worker, tmp_path / "job", f"got = 1\nraise ValueError({VALUE!r})")
    assert str(exc) == REASONS["exception"] and VALUE in exc.detail
