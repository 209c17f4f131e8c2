"""``ingest_dicom``: a folder of raw DICOM in, a de-identified, verified dataset out.

How it runs: the runner walks SRC (sorted, following no output folder inside it), keys
each file by path, size, modification time and the run's configuration (see
:mod:`.state`), and skips the files the state store already has (done or quarantined with
the same settings; a done file whose output is gone is redone). The rest goes in chunks to
a process pool (``fork``, so workers inherit the imported modules; one worker per core,
each with its own :class:`~.deid.Deidentifier`; see :mod:`.worker`), or through the same
code in this process when ``workers == 1``. As chunks come back the runner renames each
written output into place (a second source file with the same SOP Instance UID, in this
run or an earlier one, is quarantined as a duplicate instead), records the outcomes in the
state store and advances a Rich progress bar. At the end it writes the verifier's reports,
one per output series, under ``OUT/verification/`` (``verify.write_reports``, merged with
earlier runs' reports) and the imaging index of every done file, this run's and earlier
runs', to ``OUT/index.parquet`` (``index.write_index``); both modules are optional
imports. The result is an :class:`IngestSummary`: counts, quarantine reasons, leaks, index
rows. Sources are only read. A leak found by the verifier leaves ``summary.ok`` false; the
CLI exits non-zero.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import json
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from medfed.common.errors import BadRequest
from medfed.node.ingest.dicom.burned import Rectangles
from medfed.node.ingest.dicom.profile import Option, parse_options
from medfed.node.ingest.dicom.state import Recorded, StateStore, file_key
from medfed.node.ingest.dicom.worker import (
    Outcome,
    Settings,
    init_worker,
    quarantine,
    run_chunk,
)
from medfed.node.ingest.keys import derive_key, hmac_hex

__all__ = ["ENGINE_VERSION", "IngestSummary", "default_quarantine", "ingest_dicom"]

ENGINE_VERSION = "medfed-dicom-deid-1"
STATE_DIR = ".ingest"
REPORTS_DIR = "verification"
INDEX_NAME = "index.parquet"


@dataclass
class IngestSummary:
    source: Path
    out: Path
    quarantine: Path
    done: int = 0
    skipped: int = 0
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    leaks: list[tuple[str, list[str]]] = field(default_factory=list)
    index_rows: list[dict[str, Any]] = field(default_factory=list)
    verification: dict[str, Any] | None = None  # summary of the per-series reports
    index_files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No leak: every output that was written passed the verifier."""
        return not self.leaks

    @property
    def files_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def reasons(self) -> Counter[str]:
        """Quarantine reasons, the device/detail part cut off, with their counts."""
        return Counter(reason.split(";")[0].split(":")[0] for _, reason in self.quarantined)


def default_quarantine(out: Path) -> Path:
    """Quarantine beside the dataset folder, so the dataset holds only released files."""
    return out.with_name(out.name + ".quarantine")


def ingest_dicom(
    src: Path,
    out: Path,
    *,
    secret: str,
    options: Iterable[Option | str] = (),
    rectangles: Rectangles | None = None,
    workers: int | None = os.cpu_count(),
    progress: bool = True,
    quarantine: Path | None = None,
) -> IngestSummary:
    """De-identify every file under ``src`` into ``out``; see the module docstring."""
    started = time.perf_counter()
    chosen = parse_options(options)
    src, out = src.resolve(), out.resolve()
    quarantine = (quarantine or default_quarantine(out)).resolve()
    if not src.exists():
        raise BadRequest(f"source {src} does not exist")
    if out == src or src.is_relative_to(out):
        raise BadRequest(f"the output folder {out} must not contain the source {src}")
    settings = Settings(secret, tuple(sorted(o.value for o in chosen)), rectangles, out, quarantine)
    config = _config_hash(settings)
    summary = IngestSummary(src, out, quarantine)
    out.mkdir(parents=True, exist_ok=True)
    store = StateStore(out / STATE_DIR / "state.sqlite")
    try:
        known = store.load()
        todo: list[tuple[str, str, str]] = []  # key, path, relative path
        rows: dict[str, dict[str, Any]] = {}
        for path in _walk(src, skip=(out, quarantine)):
            key = file_key(path, config)
            seen = known.get(key)
            if seen is not None and (seen.status != "done" or Path(seen.output or "").exists()):
                summary.skipped += 1
                if seen.status == "quarantined":
                    summary.quarantined.append((seen.source, seen.reason))
                elif seen.index_row is not None:
                    rows[key] = seen.index_row
                continue
            todo.append((key, str(path), path.relative_to(src).as_posix()))
        batch: list[tuple[str, Recorded]] = []
        scans: dict[str, tuple[str, list[Any]]] = {}
        owners = {r.output: r.source for r in known.values() if r.status == "done" and r.output}
        for key, outcome in _run(todo, settings, workers or 1, progress):
            outcome = _settle(outcome, owners, quarantine)
            if outcome.scan is not None and outcome.output:
                name = Path(outcome.output).relative_to(out).as_posix()
                scans[name] = (outcome.series_uid, outcome.scan)
            if outcome.status == "leak":
                summary.leaks.append((outcome.source, outcome.findings))
                continue
            if outcome.status == "done":
                summary.done += 1
                if outcome.index_row is not None:
                    rows[key] = outcome.index_row
            else:
                summary.quarantined.append((outcome.source, outcome.reason))
            batch.append((key, _recorded(outcome)))
            if len(batch) >= 256:
                store.record(batch)
                batch = []
        store.record(batch)
        summary.index_rows = list(rows.values())
    finally:
        store.close()
    summary.verification = _write_reports(scans, out / REPORTS_DIR)
    summary.index_files = _write_index(summary.index_rows, out / INDEX_NAME)
    summary.seconds = time.perf_counter() - started
    return summary


def _write_reports(scans: dict[str, tuple[str, list[Any]]], folder: Path) -> dict[str, Any] | None:
    """Per-series verification reports (``verify.write_reports``), if the verifier is here."""
    verify = _optional("verify")
    if verify is None or not hasattr(verify, "write_reports"):
        return None
    files = {name: verify.FileScan(uid, found) for name, (uid, found) in scans.items()}
    report: dict[str, Any] = verify.write_reports(files, folder)
    return report


def _write_index(rows: list[dict[str, Any]], path: Path) -> list[Path]:
    """The imaging index (``index.write_index``) of every done file, if the module is here."""
    index = _optional("index")
    if index is None or not hasattr(index, "write_index") or not rows:
        return []
    written: list[Path] = index.write_index(rows, path)
    return written


def _optional(name: str) -> Any:
    full = f"medfed.node.ingest.dicom.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as exc:
        if exc.name != full:
            raise
        return None


def _settle(outcome: Outcome, owners: dict[str, str], quarantine_root: Path) -> Outcome:
    """Rename a written output into place, unless another source owns that instance."""
    if outcome.status != "done" or outcome.tmp is None or outcome.output is None:
        return outcome
    owner = owners.get(outcome.output)
    if owner is not None and owner != outcome.source:
        Path(outcome.tmp).unlink(missing_ok=True)
        reason = f"duplicate SOP Instance UID: the same instance as {owner}"
        return quarantine(quarantine_root, Path(outcome.source), outcome.rel, reason)
    os.replace(outcome.tmp, outcome.output)
    owners[outcome.output] = outcome.source
    return outcome


def _recorded(outcome: Outcome) -> Recorded:
    return Recorded(
        outcome.source, outcome.status, outcome.output, outcome.reason, outcome.index_row
    )


def _config_hash(settings: Settings) -> str:
    fingerprint = hmac_hex(derive_key(settings.secret, "dicom-uid"), "fingerprint")[:16]
    config = {
        "engine": ENGINE_VERSION,
        "options": list(settings.options),
        "rectangles": settings.rectangles.fingerprint() if settings.rectangles else None,
        "key": fingerprint,
        "out": str(settings.out),
    }
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _walk(src: Path, *, skip: tuple[Path, ...]) -> Iterator[Path]:
    if src.is_file():
        yield src
        return
    for root, dirs, files in os.walk(src):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if here / d not in skip and not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield here / name


def _chunks(items: list[tuple[str, str, str]], size: int) -> list[list[tuple[str, str, str]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _run(
    todo: list[tuple[str, str, str]], settings: Settings, workers: int, show: bool
) -> Iterator[tuple[str, Outcome]]:
    """Process ``todo`` (in a pool when ``workers > 1``), yielding outcomes as they come."""
    if not todo:
        return
    columns = (
        TextColumn("de-identifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    workers = max(1, min(workers, len(todo)))
    size = max(1, min(64, len(todo) // (workers * 4) or 1))
    chunks = [[(k, p, r) for k, p, r in chunk] for chunk in _chunks(todo, size)]
    if workers == 1:
        init_worker(settings)
        with Progress(*columns, disable=not show, transient=False) as bar:
            task = bar.add_task("ingest", total=len(todo))
            for chunk in chunks:
                outcomes = run_chunk([(path, rel) for _, path, rel in chunk])
                yield from zip([key for key, _, _ in chunk], outcomes, strict=True)
                bar.advance(task, len(chunk))
        return
    # fork: workers inherit the imported engine, verifier and index (no start-up imports);
    # every worker is forked at the first submit, before the progress bar starts a thread
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    _optional("verify"), _optional("index")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=init_worker, initargs=(settings,)
    ) as pool:
        pending: dict[Future[list[Outcome]], list[str]] = {}
        queue = iter(chunks)

        def submit(chunk: list[tuple[str, str, str]]) -> None:
            future = pool.submit(run_chunk, [(p, r) for _, p, r in chunk])
            pending[future] = [k for k, _, _ in chunk]

        for chunk in itertools.islice(queue, workers * 2):  # every worker busy, one ahead
            submit(chunk)
        with Progress(*columns, disable=not show, transient=False) as bar:
            task = bar.add_task("ingest", total=len(todo))
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    keys = pending.pop(future)
                    yield from zip(keys, future.result(), strict=True)
                    bar.advance(task, len(keys))
                    nxt = next(queue, None)
                    if nxt is not None:
                        submit(nxt)
