"""Hub and nodes as real processes on 127.0.0.1, for end-to-end tests, benchmarks and the demo.

:class:`HubProcess` runs ``medfed hub serve`` on a free port against a data folder (or a
database URL) and waits for ``/api/health``. :class:`NodeProcess` writes a ``node.toml``
and runs ``medfed node start``. Both can be killed (SIGKILL, as a crash) and started
again on the same state.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from medfed.node.runlog import RunLog


def free_port() -> int:
    """A port the kernel just found free, in this test worker's own residue class.

    Under pytest-xdist (``PYTEST_XDIST_WORKER=gwN`` of ``PYTEST_XDIST_WORKER_COUNT``)
    worker N only takes ports ``p`` with ``p % count == N``, so two workers never race
    for the same port between finding it and the server binding it.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    held: list[socket.socket] = []  # kept open while searching, so the kernel moves on
    try:
        while True:
            sock = socket.socket()
            held.append(sock)
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
            if count <= 1 or port % count == index % count:
                return port
    finally:
        for sock in held:
            sock.close()


#: every hub and node started here and not yet reaped: killed when the interpreter exits, so a
#: test that fails before its clean-up leaves no process behind to load the machine
_LIVE: set[subprocess.Popen[bytes]] = set()


def _spawn(argv: list[str], *, env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    _LIVE.add(process)
    return process


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_LIVE):
        if process.poll() is None:
            process.kill()
            process.wait()
    _LIVE.clear()


class _PortTaken(Exception):
    """The hub could not bind its port: another process took it after :func:`free_port`."""


def _medfed(*args: str) -> list[str]:
    return [sys.executable, "-m", "medfed.cli.main", *args]


class _Managed:
    """Stop (SIGTERM, then SIGKILL after 10 s) or kill (SIGKILL, as a crash) a child."""

    process: subprocess.Popen[bytes] | None
    _log: IO[bytes] | None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        if self.process is not None:
            _LIVE.discard(self.process)
        self._close_log()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class HubProcess(_Managed):
    data_dir: Path
    database_url: str | None = None
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    #: (certificate, key) PEM files: the hub serves HTTPS (``--ssl-certfile/--ssl-keyfile``)
    tls: tuple[Path, Path] | None = None
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.tls[0])) if self.tls else True

    def environment(self) -> dict[str, str]:
        env = {**os.environ, "MEDFED_DEV_MODE": "1", "MEDFED_DATA_DIR": str(self.data_dir)}
        if self.database_url:
            env["MEDFED_DATABASE_URL"] = self.database_url
        env.update(self.env)
        return env

    def start(self, timeout: float = 120.0) -> None:
        """Start and wait for health; a port taken meanwhile is replaced (three tries)."""
        for _ in range(2):
            try:
                return self._start(timeout)
            except _PortTaken:
                self.port = free_port()
        return self._start(timeout)

    def _start(self, timeout: float) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.data_dir / "hub.log"
        log_start = log_path.stat().st_size if log_path.exists() else 0
        self._log = open(log_path, "ab")  # noqa: SIM115
        tls = (
            ["--ssl-certfile", str(self.tls[0]), "--ssl-keyfile", str(self.tls[1])]
            if self.tls
            else []
        )
        self.process = _spawn(
            _medfed("hub", "serve", "--port", str(self.port), *tls),
            env=self.environment(),
            log=self._log,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._close_log()
                with open(log_path, "rb") as log:
                    log.seek(log_start)
                    if b"address already in use" in log.read().lower():
                        raise _PortTaken(self.port)
                raise RuntimeError(f"hub exited with {self.process.returncode}; see {log_path}")
            try:
                health = httpx.get(self.url + "/api/health", timeout=1.0, verify=self._verify())
                if health.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"hub did not answer within {timeout} s")


@dataclass
class NodeProcess(_Managed):
    name: str
    folder: Path
    hub_url: str
    secret: str
    datasets: dict[str, Path]
    min_cell_count: int = 5
    heartbeat_seconds: float = 1.0
    witness_seconds: float = 1.0
    extra_policy: str = ""
    #: top-level ``node.toml`` lines (e.g. ``poll_wait_seconds = 120``)
    extra_config: str = ""
    #: dataset → its ``person_column`` (opt-out register applied to it)
    person_columns: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.folder / "node.toml"

    def write_config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "node.secret").write_text(self.secret)
        lines = [
            f'hub_url = "{self.hub_url}"',
            'secret_file = "node.secret"',
            'data_dir = "state"',
            f"heartbeat_seconds = {self.heartbeat_seconds}",
            f"witness_seconds = {self.witness_seconds}",
            self.extra_config,
            "",
            "[policy]",
            f"min_cell_count = {self.min_cell_count}",
            self.extra_policy,
        ]
        for name, path in self.datasets.items():
            lines += ["", "[[datasets]]", f'name = "{name}"', f'path = "{path}"']
            if name in self.person_columns:
                lines.append(f'person_column = "{self.person_columns[name]}"')
        self.config_path.write_text("\n".join(lines) + "\n")
        return self.config_path

    def start(self) -> None:
        self.write_config()
        self._log = open(self.folder / "node.log", "ab")  # noqa: SIM115
        self.process = _spawn(
            _medfed("node", "start", "--config", str(self.config_path), "-v"),
            env={**os.environ},
            log=self._log,
        )

    def run_log(
        self, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """The node's run log entries, once ``until(entries)`` holds (``TimeoutError`` if not).

        A node writes a run's entry after the hub accepted its answer (the entry says
        whether it was), so a task can end a moment before its last entry is on disk.
        """
        log = RunLog(self.folder / "state" / "runs.jsonl")
        deadline = time.monotonic() + timeout
        while True:
            try:
                entries = log.entries()
            except json.JSONDecodeError:  # read while the node was writing its last line
                entries = None
            if entries is not None and until(entries):
                return entries
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: the run log did not reach the expected state")
            time.sleep(0.05)
