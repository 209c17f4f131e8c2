"""The sandbox code that is not medfed's own runs in (bubblewrap), and its limits.

:func:`sandboxed_popen` starts a command (a Python child of the agent's own interpreter)
so that it sees only what it needs:

* ``bwrap --unshare-all``: new user, mount, pid, ipc, uts, cgroup and *network*
  namespaces (only a loopback of its own: no route anywhere, not even to the node's host);
  ``--die-with-parent``, ``--new-session`` (no terminal to push input into);
* a root of its own: ``/usr`` and the ``/lib*`` links, ``/etc/ld.so.cache`` and a
  one-line ``/etc/passwd`` (not the host's ``/etc``), ``sys.prefix``,
  ``sys.base_prefix`` and the folders on the agent's ``sys.path`` (medfed's own code and
  its libraries) *read-only*; a fresh ``/proc`` (only the sandbox's processes), a minimal
  ``/dev``, a private ``/tmp`` (tmpfs); ``scratch`` read-write at its own path and nothing
  else of the node: not its data folder, state, ``node.toml``, secret, keys, approvals,
  logs or datasets. CUDA device nodes (``/dev/nvidia*``) are ``--dev-bind``-ed when they
  exist, so GPU training still works.
* an unprivileged uid, for real: when the agent runs as root, bwrap (privileged) makes
  the namespaces without a user namespace and ``setpriv`` drops the command to uid/gid
  65534 with no capabilities and ``no_new_privs``. In a user namespace mapped from root the
  process would still be kuid 0, and the kernel does not count kuid 0's processes
  (``RLIMIT_NPROC``); as the real uid 65534 it does. An agent that is not root runs an
  unprivileged bwrap (``--unshare-all`` with a user namespace, uid 65534 inside); its
  process limit then counts the agent user's own processes too. The folders above each
  bound path are made ``0755`` inside, and the scratch folder is given to 65534.
* limits (``prlimit`` before bwrap, inherited by everything inside): address space
  (``RLIMIT_AS``), CPU seconds (``RLIMIT_CPU``), processes of the sandbox uid
  (``RLIMIT_NPROC``), file size (``RLIMIT_FSIZE``), no core files. The output size limit
  is applied by the reader (:func:`read_output`, the plan process's answer line).

``kind="none"`` (a node whose steward set ``sandbox = "none"``) starts the command as
is, with the address-space, CPU and file-size limits only; the caller warns and logs it.
Where bwrap is missing or cannot make a sandbox here, :func:`sandboxed_popen` raises
:class:`SandboxUnavailable` naming bubblewrap. ``MEDFED_BWRAP``, ``MEDFED_PRLIMIT`` and
``MEDFED_SETPRIV`` name the tools where they are not on ``PATH``. With ``/dev/nvidia*`` present the
address-space limit is left out (CUDA reserves tens of GiB of address space).
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medfed.node.config import Policy

__all__ = [
    "SANDBOX_UID",
    "SandboxLimits",
    "SandboxUnavailable",
    "bwrap_argv",
    "bwrap_usable",
    "prepare_scratch",
    "read_output",
    "sandbox_command",
    "sandboxed_popen",
]

SANDBOX_UID = 65534  # nobody / nogroup
_PASSWD = (
    f"nobody:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:/tmp:/usr/sbin/nologin\n".encode(),
    f"nogroup:x:{SANDBOX_UID}:\n".encode(),
)


class SandboxUnavailable(Exception):
    """bubblewrap is missing or cannot make a sandbox here, and the node needs one."""


@dataclass(frozen=True)
class SandboxLimits:
    """What one sandboxed process may use (node policy ``sandbox_*`` keys)."""

    memory_mb: int = 8192  # address space: torch maps ~2.5 GiB just by being imported
    cpu_seconds: int = 3600
    processes: int = 256  # processes and threads of the sandbox uid
    file_mb: int = 1024  # the largest file it may write
    output_mb: int = 256  # the most the agent reads back from one job

    def __post_init__(self) -> None:
        for name in ("memory_mb", "cpu_seconds", "processes", "file_mb", "output_mb"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"sandbox limit {name} must be a positive integer, not {value!r}")

    @classmethod
    def from_policy(cls, policy: Policy) -> SandboxLimits:
        return cls(
            memory_mb=policy.sandbox_memory_mb,
            cpu_seconds=policy.sandbox_cpu_seconds,
            processes=policy.sandbox_processes,
            file_mb=policy.sandbox_file_mb,
            output_mb=policy.sandbox_output_mb,
        )

    def prlimit_args(self, *, processes: bool) -> list[str]:
        mib = 1 << 20
        args = [
            f"--as={self.memory_mb * mib}",
            # SIGXCPU at the limit, SIGKILL a second later if it is ignored
            f"--cpu={self.cpu_seconds}:{self.cpu_seconds + 1}",
            f"--fsize={self.file_mb * mib}",
            "--core=0",
        ]
        if processes:
            args.append(f"--nproc={self.processes}")
        return args


def _tool(name: str) -> str:
    override = os.environ.get(f"MEDFED_{name.upper()}")  # e.g. MEDFED_BWRAP=/opt/bin/bwrap
    search = os.environ.get("PATH", "") + ":/usr/bin:/bin"
    path = shutil.which(override or name, path=None if override else search)
    if path is None:
        raise SandboxUnavailable(
            f"{name} is not installed: this node runs no plan or script code without the "
            "bubblewrap sandbox (install the Debian packages bubblewrap and util-linux, or "
            'set sandbox = "none" in the node policy to run it unsandboxed)'
        )
    return path


def _drop_uid() -> bool:
    return os.geteuid() == 0


def _sys_paths() -> list[Path]:
    """The interpreter's own folders and the agent's import path (existing entries only)."""
    cwd = Path.cwd().resolve()
    roots: list[Path] = []
    for raw in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path):
        if not raw:
            continue
        path = Path(raw).resolve()
        if path == cwd or path == Path("/") or not path.exists():
            continue
        roots.append(path)
    roots.sort(key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in roots:
        if not any(path == k or k in path.parents for k in kept):
            kept.append(path)
    return kept


def _system_binds() -> list[str]:
    """``/usr`` and the ``/lib*``, ``/bin`` links (or folders) of a merged-/usr system."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("lib", "lib64", "lib32", "libx32", "bin", "sbin"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in ("/etc/ld.so.cache", "/etc/localtime"):
        if Path(name).exists():
            args += ["--ro-bind", name, name]
    return args


def _gpu_binds() -> list[str]:
    args: list[str] = []
    for dev in sorted(glob.glob("/dev/nvidia*")):
        if not os.path.isdir(dev):
            args += ["--dev-bind", dev, dev]
    return args


def _parents(paths: Sequence[Path]) -> list[str]:
    """``--perms 0755 --dir`` for every folder above the bound paths (so uid 65534 may pass)."""
    seen: set[Path] = set()
    args: list[str] = []
    for path in paths:
        for parent in reversed(path.parents):
            if parent != Path("/") and parent not in seen:
                seen.add(parent)
                args += ["--perms", "0755", "--dir", str(parent)]
    return args


def bwrap_argv(
    *, scratch: Path, ro_paths: Sequence[Path], privileged: bool, data_fds: tuple[int, int]
) -> list[str]:
    """bwrap's options (without the program and the command): see the module text.

    ``privileged`` (the agent is root): bwrap makes the namespaces itself, without a user
    namespace, keeps only ``CAP_SETUID``/``CAP_SETGID`` for the ``setpriv`` that
    :func:`sandbox_command` puts in front of the command to drop to uid 65534.
    """
    if privileged:
        unshare = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        unshare += ["--unshare-cgroup-try", "--cap-drop", "ALL"]
        unshare += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        unshare = ["--unshare-all", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
    args = [
        *unshare,
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",
        *_parents([Path("/etc/passwd"), *ro_paths, scratch]),
        *_system_binds(),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        *_gpu_binds(),
        "--ro-bind-data",
        str(data_fds[0]),
        "/etc/passwd",
        "--ro-bind-data",
        str(data_fds[1]),
        "/etc/group",
    ]
    for path in ro_paths:
        args += ["--ro-bind", str(path), str(path)]
    args += ["--bind", str(scratch), str(scratch), "--chdir", str(scratch)]
    return args


def sandbox_command(
    argv: Sequence[str], *, scratch: Path, limits: SandboxLimits, data_fds: tuple[int, int]
) -> list[str]:
    """The whole command line: ``prlimit … -- bwrap … -- [setpriv … --] argv``."""
    prlimit, bwrap = _tool("prlimit"), _tool("bwrap")
    privileged = _drop_uid()
    options = bwrap_argv(
        scratch=scratch, ro_paths=_sys_paths(), privileged=privileged, data_fds=data_fds
    )
    drop: list[str] = []
    if privileged:
        ids = str(SANDBOX_UID)
        drop = [_tool("setpriv"), f"--reuid={ids}", f"--regid={ids}", "--clear-groups"]
        drop += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    limit = limits.prlimit_args(processes=True)
    if _gpu_binds():  # CUDA reserves tens of GiB of address space: RLIMIT_AS would break it
        limit = [arg for arg in limit if not arg.startswith("--as=")]
    return [prlimit, *limit, "--", bwrap, *options, "--", *drop, *argv]


def _data_fd(stack: ExitStack, data: bytes) -> int:
    read, write = os.pipe()
    stack.callback(os.close, read)
    try:
        os.write(write, data)  # a few bytes: fit the pipe's buffer
    finally:
        os.close(write)
    return read


def prepare_scratch(scratch: Path) -> None:
    """Give ``scratch`` to the sandbox uid when the agent is root (only it is writable)."""
    if not _drop_uid():
        return
    os.chown(scratch, SANDBOX_UID, 0)  # group root: bwrap (no capabilities left) enters it
    os.chmod(scratch, 0o770)


def _start(
    argv: Sequence[str], scratch: Path, limits: SandboxLimits, **kwargs: Any
) -> subprocess.Popen[bytes]:
    with ExitStack() as stack:
        data_fds = (_data_fd(stack, _PASSWD[0]), _data_fd(stack, _PASSWD[1]))
        command = sandbox_command(argv, scratch=scratch, limits=limits, data_fds=data_fds)
        kwargs["pass_fds"] = tuple(kwargs.get("pass_fds", ())) + data_fds
        return subprocess.Popen(command, **kwargs)
    raise AssertionError("unreachable")  # pragma: no cover


def bwrap_usable() -> str | None:
    """``None`` when a sandbox can be made here, otherwise why not (checked once per bwrap)."""
    return _usable(os.environ.get("MEDFED_BWRAP", ""))


@functools.cache
def _usable(bwrap: str) -> str | None:
    try:
        scratch = Path(os.environ.get("TMPDIR", "/tmp")).resolve()
        probe = _start(
            ["/usr/bin/env", "true"],
            scratch,
            SandboxLimits(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin"},
        )
        _, err = probe.communicate(timeout=30)
    except SandboxUnavailable as exc:
        return str(exc)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bubblewrap cannot start here: {exc}"
    if probe.returncode != 0:
        problem = err.decode(errors="replace").strip().splitlines()
        return "bubblewrap cannot make a sandbox here: " + (problem[-1] if problem else "?")
    return None


def sandboxed_popen(
    argv: Sequence[str],
    *,
    scratch: Path,
    kind: str,
    limits: SandboxLimits,
    **popen_kwargs: Any,
) -> subprocess.Popen[bytes]:
    """Start argv (e.g. ``[sys.executable, "-m", "medfed.node.executors.script_process"]``)
    in the sandbox: ``scratch`` is the only writable path (bound at the same path inside),
    the interpreter and libraries read-only, no network, limits applied.

    ``kind="none"`` starts it unsandboxed (address-space, CPU and file-size limits only).
    :class:`SandboxUnavailable` where ``kind="bwrap"`` and bwrap cannot run here.
    """
    scratch = Path(scratch).resolve()
    if not scratch.is_dir():
        raise ValueError(f"sandbox scratch folder {scratch} does not exist")
    popen_kwargs.setdefault("cwd", scratch)
    popen_kwargs.setdefault("close_fds", True)
    if kind == "none":
        prlimit = shutil.which("prlimit")
        prefix = [prlimit, *limits.prlimit_args(processes=False), "--"] if prlimit else []
        return subprocess.Popen([*prefix, *argv], **popen_kwargs)
    if kind != "bwrap":
        raise ValueError(f'unknown sandbox kind {kind!r}: use "bwrap" or "none"')
    problem = bwrap_usable()
    if problem is not None:
        raise SandboxUnavailable(problem)
    prepare_scratch(scratch)
    return _start(argv, scratch, limits, **popen_kwargs)


def read_output(path: Path, limit_bytes: int) -> bytes:
    """A file the sandbox wrote, read without following links and at most ``limit_bytes``.

    :class:`PermissionError` for anything but a regular file (a link the code placed to
    make the agent read its own secrets), :class:`ValueError` past the size limit.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise PermissionError(f"{path.name} is not a regular file")
        data = handle.read(limit_bytes + 1)
    if len(data) > limit_bytes:
        raise ValueError(f"{path.name} is larger than the sandbox's output limit")
    return data
