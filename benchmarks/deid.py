"""DICOM de-identification benchmark (issue 5): files/s of medfed, three peers and a floor.

Run: ``.venv/bin/python -m benchmarks.deid [--files 2000] [--workers 1 2] [--quick]
[--keep PATH] [--peers NAME ...] [--repeat N] [--profile]``.

How it runs, one step after another on one corpus, nothing in parallel with anything else.
Every measured tool runs in a fresh interpreter (a driver script passed with ``python -I -c``),
single process unless said otherwise, and times itself from inside after its imports and
set-up (``setup_seconds``); it also reports its CPU time. ``--repeat N`` runs each tool N
times into an emptied output folder and keeps the fastest run (all runs are in the JSON).

1. **Corpus** — ``--files`` files (``--quick``: 200) made with a fixed seed from pydicom's
   CT and MR test files (``CT_small``, ``MR_small``, ``MR_small_implicit``, and from
   pydicom-data ``emri_small`` (10 frames) and ``693_UNCI`` (512x512 CT) where present),
   20 instances per simulated patient: one study, two series of 10. Each patient has its own
   name, ID, birth date, accession number, institution, referring physician and study date;
   each study, series and instance new UIDs. Every file carries a ReferencedImageSequence
   (the next instance's SOP Instance UID), a RequestAttributesSequence (accession number,
   requested procedure ID, requesting physician) and a private element whose text holds the
   patient's name and ID. The files go, flat, to a temporary folder, or to ``PATH/corpus``
   with ``--keep PATH`` (reused by the next run with the same ``--files``).
2. **Floor** — pydicom ``dcmread`` then ``save_as`` of every file, in this venv.
3. **Peers** — dicognito, deid (pydicom/deid) and dicom-anonymizer, each pip-installed
   (pinned, see ``PEERS``) into its own virtual environment under ``benchmarks/.peers/NAME``
   (made once, reused), each de-identifying the whole corpus with its default profile
   (drivers in ``_SETUP``). A failed install or run marks the peer unavailable with its
   reason; the benchmark goes on.
4. **medfed** — ``ingest_dicom`` (Basic profile, no options) for each ``--workers``, into a
   fresh folder, in this venv. Its own clock (``IngestSummary.seconds``: walk, state store,
   pool start, de-identify, write, verify, reports, index) gives files/s. The benchmark
   fails (exit 1, after writing the results) unless every file was written and medfed's
   verifier found no leak.
5. **Residual identifiers** — every output (of every tool, the floor included as a check of
   the check) is searched as raw bytes for the identifiers planted in its own source: the
   patient's and the referring physician's surnames (the private text included), patient
   ID, accession number, birth date, study date, institution name and the five source UIDs.

Prints a table, writes ``benchmarks/results/deid.json``. All subprocesses are bounded by a
timeout; the only network use is pip reaching PyPI. Temporary folders are removed; with
``--keep PATH`` the corpus and the outputs (``PATH/outputs``, emptied at each start) stay.
``--profile`` adds one ``workers=1`` medfed run under cProfile and prints where time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import datetime as dt
import io
import json
import os
import platform
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / ".peers"
RESULTS = HERE / "results" / "deid.json"
SEED = 5
CORPUS_VERSION = 1
PER_SERIES, SERIES_PER_PATIENT = 10, 2
SECRET = "benchmark-node-secret"
INSTALL_TIMEOUT_S = 600
TEMPLATES = {  # test file → weight when picking a series' template
    "CT_small.dcm": 4,
    "MR_small.dcm": 3,
    "MR_small_implicit.dcm": 1,
    "emri_small.dcm": 1,
    "693_UNCI.dcm": 1,
}
SURNAMES = (
    "Quillbrook", "Ashcombe", "Thornwick", "Vexley", "Marrowdale", "Fenhallow", "Oakridge",
    "Bramblecote", "Wrexford", "Haddlesey", "Kestrelby", "Pellingham", "Strathmorne",
    "Duskwater", "Irongate", "Galloway-Finch", "Yarrowby", "Lindqvistova", "Okonkwo-Bell",
    "Rosenthalle",
)  # fmt: skip
GIVEN = (
    "Adaeze", "Birgitta", "Cosimo", "Dagny", "Eitan", "Folasade", "Greer", "Hamish", "Ines",
    "Jarrah", "Kalinda", "Leopold", "Mireille", "Niamh", "Oskar", "Priya",
)  # fmt: skip
INSTITUTIONS = (
    "Fenwick Vale General Hospital", "St Brigid of Oakhaven Infirmary",
    "Harrowgate Royal Imaging Centre", "Kilnmoor University Clinic",
    "Westerhythe Community Hospital",
)  # fmt: skip
PEERS: dict[str, tuple[str, str]] = {  # name → (pip requirement, distribution)
    "dicognito": ("dicognito==0.19.0", "dicognito"),
    "deid": ("deid==0.4.13", "deid"),
    "dicom-anonymizer": ("dicom-anonymizer==2.1.0", "dicom-anonymizer"),
}

# Driver scripts, each run by a fresh interpreter (a peer's own; this one's for the floor and
# medfed), timed from inside after imports and set-up. argv: corpus, out, dist, result.json.
_DRIVER = """
import json, os, sys, time
T0 = time.perf_counter()
SRC, OUT, DIST, RESULT = sys.argv[1:5]
{setup}
FILES = sorted(os.path.join(SRC, n) for n in os.listdir(SRC) if n.endswith(".dcm"))
DONE, ERRORS = 0, []
STARTED, CPU = time.perf_counter(), time.process_time()
for path in FILES:
    try:
        process(path)
        DONE += 1
    except Exception as exc:
        ERRORS.append(f"{{os.path.basename(path)}}: {{type(exc).__name__}}: {{exc}}"[:300])
SECONDS, CPU = time.perf_counter() - STARTED, time.process_time() - CPU
from importlib.metadata import version
with open(RESULT, "w") as f:
    json.dump({{"done": DONE, "errors": len(ERRORS), "first_errors": ERRORS[:5],
               "seconds": SECONDS, "cpu_seconds": CPU, "setup_seconds": STARTED - T0,
               "version": version(DIST), "pydicom": version("pydicom")}}, f)
"""
_SETUP = {
    "floor": """
import warnings
import pydicom
warnings.simplefilter("ignore")
def process(path):  # read, then write as read
    pydicom.dcmread(path).save_as(os.path.join(OUT, os.path.basename(path)))
""",
    "dicognito": """
import pydicom
from dicognito.anonymizer import Anonymizer
anonymizer = Anonymizer()  # one for the corpus: consistent within a patient/study/series
def process(path):
    with pydicom.dcmread(path) as ds:  # as dicognito's CLI does
        anonymizer.anonymize(ds)
        ds.save_as(os.path.join(OUT, os.path.basename(path)))
""",
    "deid": """
from deid.config import DeidRecipe
from deid.dicom import replace_identifiers
recipe = DeidRecipe()  # the default recipe, deid.dicom
def process(path):
    replace_identifiers(dicom_files=[path], deid=recipe, save=True, output_folder=OUT,
                        overwrite=True)
""",
    "dicom-anonymizer": """
from dicomanonymizer.simpledicomanonymizer import anonymize_dicom_file
def process(path):  # default rules (dicomfields_2023), private tags deleted
    anonymize_dicom_file(path, os.path.join(OUT, os.path.basename(path)))
""",
}

_MEDFED = """
import json, sys, time
T0 = time.perf_counter()
from pathlib import Path
SRC, OUT, WORKERS, SECRET, N, RESULT = sys.argv[1:7]
from importlib.metadata import version
from medfed.node.ingest.dicom.runner import STATE_DIR, ingest_dicom
from medfed.node.ingest.dicom.state import StateStore
import resource
def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
STARTED, CPU, KIDS = time.perf_counter(), time.process_time(), children_cpu()
s = ingest_dicom(Path(SRC), Path(OUT), secret=SECRET, workers=int(WORKERS), progress=False)
CALL, CPU = time.perf_counter() - STARTED, time.process_time() - CPU
KIDS = children_cpu() - KIDS  # the pool's workers, forked and reaped by this process
store = StateStore(Path(OUT) / STATE_DIR / "state.sqlite")
outputs = [(Path(r.source).name, r.output or "") for r in store.load().values()]
store.close()
with open(RESULT, "w") as f:
    json.dump({"workers": int(WORKERS), "done": s.done, "quarantined": len(s.quarantined),
               "quarantine_reasons": dict(s.reasons()), "leaks": len(s.leaks),
               "first_leaks": [f"{src}: {found[:3]}" for src, found in s.leaks[:3]],
               "seconds": s.seconds, "call_seconds": CALL, "setup_seconds": STARTED - T0,
               "cpu_seconds": CPU + KIDS, "main_cpu_seconds": CPU,
               "ok": s.ok and s.done == int(N), "version": version("medfed"),
               "outputs": outputs}, f)
"""


# ---------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Patient:
    number: int
    surname: str
    given: str
    pid: str
    birth: str
    sex: str
    age: str
    institution: str
    referring: str
    accession: str
    study_date: str
    study_time: str
    study_uid: str


def _uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=[f"medfed-bench-deid-{SEED}", *map(str, parts)]))


def _patient(rng: random.Random, number: int) -> Patient:
    birth = dt.date(1930, 1, 1) + dt.timedelta(days=rng.randrange(27_000))
    study = dt.date(2015, 1, 1) + dt.timedelta(days=rng.randrange(3_650))
    referring = f"{rng.choice(SURNAMES)}^{rng.choice(GIVEN)}^^Dr"
    return Patient(
        number=number,
        surname=rng.choice(SURNAMES),
        given=rng.choice(GIVEN),
        pid=f"MF{rng.randrange(10**8):08d}",
        birth=birth.strftime("%Y%m%d"),
        sex=rng.choice("FM"),
        age=f"{(study - birth).days // 365:03d}Y",
        institution=rng.choice(INSTITUTIONS),
        referring=referring,
        accession=f"AC{rng.randrange(10**8):08d}",
        study_date=study.strftime("%Y%m%d"),
        study_time=f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}",
        study_uid=_uid("study", number),
    )


def _stamp(ds: Dataset, p: Patient, series: int, uids: tuple[str, str, str, str], i: int) -> None:
    _, _, sop, referenced = uids
    ds.PatientName = f"{p.surname}^{p.given}"
    ds.PatientID, ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = p.pid, p.birth, p.sex, p.age
    ds.InstitutionName, ds.ReferringPhysicianName = p.institution, p.referring
    ds.AccessionNumber, ds.StudyID = p.accession, f"{p.number + 1}"
    for what in ("Study", "Series", "Acquisition", "Content", "InstanceCreation"):
        setattr(ds, f"{what}Date", p.study_date)
        setattr(ds, f"{what}Time", p.study_time)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = p.study_uid, *uids[:2]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SeriesNumber, ds.InstanceNumber = series + 1, i + 1
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, referenced
    request = Dataset()
    request.AccessionNumber = p.accession
    request.RequestedProcedureID = f"RP{p.accession[2:]}"
    request.ScheduledProcedureStepID = f"SPS{p.accession[2:]}"
    request.RequestingPhysician = p.referring
    request.RequestedProcedureDescription = "CT CHEST" if ds.Modality == "CT" else "MR HEAD"
    ds.ReferencedImageSequence, ds.RequestAttributesSequence = [ref], [request]
    block = ds.private_block(0x0029, "MEDFED BENCH", create=True)
    block.add_new(0x10, "LO", f"{p.given} {p.surname} MRN {p.pid}")


def _templates() -> list[tuple[str, Dataset, int]]:
    found = []
    for name, weight in TEMPLATES.items():
        path = get_testdata_file(name, download=False)  # never the network
        if isinstance(path, str):
            found.append((name, pydicom.dcmread(path), weight))
        else:
            print(f"  template {name} not found (pydicom-data missing?): left out")
    if not found:
        raise SystemExit("no template files: is pydicom installed with its test files?")
    return found


def make_corpus(folder: Path, n: int) -> dict[str, dict[str, list[str]]]:
    """Write ``n`` files to ``folder``; return each file's planted identifiers by kind."""
    rng = random.Random(SEED)
    templates = _templates()
    weights = [w for _, _, w in templates]
    folder.mkdir(parents=True, exist_ok=True)
    needles: dict[str, dict[str, list[str]]] = {}
    number = 0
    while len(needles) < n:
        p = _patient(rng, number)
        for series in range(SERIES_PER_PATIENT):
            count = min(PER_SERIES, n - len(needles))
            if count <= 0:
                break
            _, template, _ = rng.choices(templates, weights=weights)[0]
            series_uid, frame_uid = _uid("series", number, series), _uid("frame", number, series)
            sops = [_uid("sop", number, series, i) for i in range(count)]
            for i, sop in enumerate(sops):
                ds = copy.deepcopy(template)
                referenced = sops[(i + 1) % count]
                _stamp(ds, p, series, (series_uid, frame_uid, sop, referenced), i)
                name = f"p{number:04d}_s{series + 1}_i{i + 1:02d}.dcm"
                ds.save_as(folder / name, enforce_file_format=True)
                needles[name] = {
                    "name": [p.surname, p.referring.split("^")[0]],
                    "patient id": [p.pid],
                    "accession": [p.accession],
                    "birth date": [p.birth],
                    "study date": [p.study_date],
                    "institution": [p.institution],
                    "uid": [p.study_uid, series_uid, frame_uid, sop, referenced],
                }
        number += 1
    return needles


def corpus_at(root: Path, n: int) -> tuple[Path, dict[str, dict[str, list[str]]], bool]:
    """The corpus under ``root`` (made, or reused when a kept one matches)."""
    folder, manifest = root / "corpus", root / "manifest.json"
    key = {"version": CORPUS_VERSION, "seed": SEED, "files": n}
    if manifest.exists() and folder.is_dir():
        saved = json.loads(manifest.read_text())
        if saved.get("key") == key and all((folder / f).exists() for f in saved["needles"]):
            return folder, saved["needles"], True
    if folder.exists():
        shutil.rmtree(folder)
    needles = make_corpus(folder, n)
    manifest.write_text(json.dumps({"key": key, "needles": needles}))
    return folder, needles, False


# --------------------------------------------------------------------- measurements


def residual(pairs: Iterable[tuple[str, Path]], needles: dict[str, dict[str, list[str]]]) -> dict:
    """Outputs that still hold an identifier planted in their source, by kind."""
    kinds: Counter[str] = Counter()
    checked = dirty = 0
    for name, output in pairs:
        if not output.is_file():
            continue
        data = output.read_bytes()
        found = {
            k for k, values in needles[name].items() if any(v.encode() in data for v in values)
        }
        checked += 1
        dirty += bool(found)
        kinds.update(found)
    return {"checked": checked, "files_with_identifiers": dirty, "by_kind": dict(kinds)}


def _drive(script: str, args: list[object], out: Path, repeat: int, **how: Any) -> dict:
    """Run a driver ``repeat`` times, each in a fresh interpreter into an emptied ``out``;
    the fastest run's figures (and every run's files/s), or why there are none."""
    python, limit = how.get("python", Path(sys.executable)), how.get("limit", 1800)
    log, result = out.with_suffix(".log"), out.with_suffix(".json")
    best: dict[str, Any] = {}
    rates: list[float] = []
    for _ in range(repeat):
        for folder in (out, out.with_name(out.name + ".quarantine")):
            shutil.rmtree(folder, ignore_errors=True)
        out.mkdir(parents=True)
        result.unlink(missing_ok=True)
        started = time.perf_counter()
        try:
            with log.open("w") as sink:
                rc = subprocess.run(
                    [python, "-I", "-c", script, *map(str, args), result],
                    stdout=sink, stderr=subprocess.STDOUT, timeout=limit, cwd=out.parent,
                ).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"available": False, "reason": f"timed out after {limit} s"}
        wall = time.perf_counter() - started
        if rc != 0 or not result.exists():
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            return {"available": False, "reason": f"exit {rc}: " + " | ".join(tail)}
        figures: dict[str, Any] = json.loads(result.read_text())
        figures.update(available=True, process_seconds=wall)
        figures["files_per_second"] = figures["done"] / figures["seconds"]
        rates.append(figures["files_per_second"])
        if figures["files_per_second"] >= best.get("files_per_second", -1.0):
            best = figures
    best["runs_files_per_second"] = rates
    return best


def run_floor(corpus: Path, work: Path, n: int, repeat: int) -> dict[str, Any]:
    script = _DRIVER.format(setup=_SETUP["floor"])
    return _drive(script, [corpus, work / "floor", "pydicom"], work / "floor", repeat)


def _peer_python(name: str, requirement: str, dist: str) -> tuple[Path | None, str]:
    """The peer's interpreter, installing it first when needed; or None and the reason."""
    venv = PEERS_DIR / name
    python = venv / "bin" / "python"
    pinned = requirement.split("==")[1]
    check = f"import importlib.metadata as m; print(m.version({dist!r}))"
    try:
        if python.exists():
            have = subprocess.run([python, "-c", check], capture_output=True, text=True, timeout=60)
            if have.returncode == 0 and have.stdout.strip() == pinned:
                return python, "reused"
        subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True, timeout=120)
        pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement]
        done = subprocess.run(pip, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"install failed: {type(exc).__name__}: {exc}"
    if done.returncode != 0:
        tail = [line for line in done.stderr.splitlines() if "is ignored" not in line][-3:]
        return None, "pip install failed: " + " | ".join(tail)
    return python, "installed"


def run_peer(name: str, corpus: Path, work: Path, n: int, repeat: int) -> dict[str, Any]:
    requirement, dist = PEERS[name]
    print(f"  {name}: environment …", flush=True)
    python, how = _peer_python(name, requirement, dist)
    if python is None:
        return {"available": False, "reason": how, "requirement": requirement}
    limit = max(600, n)  # a second a file at worst
    print(f"  {name}: de-identifying {n} files x {repeat} (limit {limit} s each) …", flush=True)
    script = _DRIVER.format(setup=_SETUP[name])
    args: list[object] = [corpus, work / name, dist]
    figures = _drive(script, args, work / name, repeat, python=python, limit=limit)
    figures.update(env=how, requirement=requirement)
    return figures


def run_medfed(corpus: Path, work: Path, workers: int, n: int, repeat: int) -> dict[str, Any]:
    out = work / f"medfed-w{workers}"
    figures = _drive(_MEDFED, [corpus, out, workers, SECRET, n], out, repeat)
    figures["outputs"] = [(s, Path(o)) for s, o in figures.get("outputs", [])]
    return figures


def profile_medfed(corpus: Path, work: Path) -> list[dict[str, Any]]:
    from medfed.node.ingest.dicom.runner import ingest_dicom

    profiler = cProfile.Profile()
    profiler.enable()
    ingest_dicom(corpus, work / "medfed-profile", secret=SECRET, workers=1, progress=False)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    print(text.getvalue())
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:20]  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    return [
        {
            "function": f"{Path(file).name}:{line}({func})",
            "calls": calls,
            "tottime_s": round(tt, 3),
            "cumtime_s": round(ct, 3),
            "share_of_total": round(tt / total, 3),
        }
        for (file, line, func), (_, calls, tt, ct, _) in rows
    ]


# ------------------------------------------------------------------------- report


def _machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pydicom": pydicom.__version__,
        "load_average_start": list(os.getloadavg()),
    }


def _targets(peers: dict[str, dict], floor: float, medfed: dict[int, dict]) -> dict[str, Any]:
    rates = {k: v["files_per_second"] for k, v in peers.items() if v.get("available")}
    medfed = {w: m for w, m in medfed.items() if m.get("available")}
    fastest = max(rates, key=rates.__getitem__) if rates else None
    least, most = (min(medfed), max(medfed)) if medfed else (1, 1)
    one = medfed[least]["files_per_second"] if medfed else None  # the fewest workers (1)
    speedup = medfed[most]["files_per_second"] / one if medfed and one else None
    per_file = {w: m["cpu_seconds"] / m["done"] for w, m in medfed.items() if m["done"]}
    # what the speed-up would be with a free core per worker: CPU per file is what scales
    free = most / least * per_file[least] / per_file[most] if len(per_file) > 1 else None
    return {
        "fastest_peer": fastest,
        "vs_fastest_peer": one / rates[fastest] if fastest and one else None,
        "vs_floor": one / floor if one else None,
        "speedup": speedup,
        "speedup_workers": [least, most],
        "speedup_if_cores_free": free,
        "cores_used": {w: m["cpu_seconds"] / m["seconds"] for w, m in medfed.items()},
        "met_2x_fastest_peer": bool(fastest and one and one >= 2 * rates[fastest]),
        "met_60pct_floor": bool(one and one >= 0.6 * floor),
        # near-linear: at least 80 % of the ideal speed-up
        "met_near_linear": bool(speedup and most > least and speedup >= 0.8 * most / least),
    }


def _print(rows: list[tuple[str, str, dict]], floor: float, fastest: float | None) -> None:
    print(
        f"\n{'tool':26} {'version':8} {'files/s':>8} {'(runs)':>13} {'x best peer':>11} "
        f"{'% floor':>7} {'CPU ms/file':>11} {'cores used':>10} {'setup s':>7} "
        f"{'left identifiers':>16}"
    )
    for label, version, fig in rows:
        if not fig.get("available", True):
            print(f"{label:26} {'-':8} unavailable: {fig.get('reason', '')[:100]}")
            continue
        rate = fig["files_per_second"]
        runs = fig.get("runs_files_per_second", [rate])
        spread = f"{min(runs):.0f}-{max(runs):.0f}" if len(runs) > 1 else ""
        vs = f"{rate / fastest:.2f}" if fastest else "-"
        res = fig.get("residual", {})
        left = f"{res.get('files_with_identifiers', '?')}/{res.get('checked', '?')}"
        cpu = f"{1000 * fig['cpu_seconds'] / fig['done']:.2f}"
        print(
            f"{label:26} {version:8} {rate:8.1f} {spread:>13} {vs:>11} {100 * rate / floor:6.0f}% "
            f"{cpu:>11} {fig['cpu_seconds'] / fig['seconds']:10.2f} "
            f"{fig.get('setup_seconds', 0):7.2f} {left:>16}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--quick", action="store_true", help="200 files")
    parser.add_argument("--keep", type=Path, metavar="PATH", help="corpus and outputs here")
    parser.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool; the fastest kept")
    parser.add_argument("--profile", action="store_true", help="cProfile a workers=1 run")
    args = parser.parse_args()
    n = 200 if args.quick else args.files
    machine, date = _machine(), time.strftime("%Y-%m-%d %H:%M")
    root = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="medfed-deid-"))
    work = root / "outputs"
    try:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        print(f"corpus: {n} files under {root / 'corpus'} …", flush=True)
        started = time.perf_counter()
        corpus, needles, reused = corpus_at(root, n)
        files = sorted(corpus.glob("*.dcm"))
        size = sum(f.stat().st_size for f in files)
        corpus_info = {
            "files": len(files),
            "bytes": size,
            "patients": len({f.name[:5] for f in files}),
            "templates": {
                k: v for k, v in TEMPLATES.items() if get_testdata_file(k, download=False)
            },
            "seed": SEED,
            "reused": reused,
            "seconds": time.perf_counter() - started,
        }
        print(f"  {len(files)} files, {size / 1e6:.1f} MB ({'reused' if reused else 'made'})")
        print("floor: pydicom read + write …", flush=True)
        floor = run_floor(corpus, work, n, args.repeat)
        if not floor.get("available"):
            raise SystemExit(f"the pydicom floor did not run: {floor.get('reason')}")
        floor["residual"] = residual(((f.name, work / "floor" / f.name) for f in files), needles)
        peers: dict[str, dict[str, Any]] = {}
        print("peers:", flush=True)
        for name in args.peers:
            peers[name] = run_peer(name, corpus, work, n, args.repeat)
            if peers[name].get("available"):
                pairs = ((f.name, work / name / f.name) for f in files)
                peers[name]["residual"] = residual(pairs, needles)
            else:
                print(f"  {name}: unavailable — {peers[name]['reason']}")
        medfed: dict[int, dict[str, Any]] = {}
        for workers in sorted(set(args.workers)):
            print(f"medfed: ingest_dicom, workers={workers} …", flush=True)
            medfed[workers] = run_medfed(corpus, work, workers, n, args.repeat)
            medfed[workers]["residual"] = residual(medfed[workers].pop("outputs"), needles)
        profile = profile_medfed(corpus, work) if args.profile else None
        machine["load_average_end"] = list(os.getloadavg())
        targets = _targets(peers, floor["files_per_second"], medfed)
        best = targets["fastest_peer"]
        best_rate = peers[best]["files_per_second"] if best else None
        rows = [("pydicom read+write (floor)", pydicom.__version__, floor)]
        rows += [(k, v.get("version", "-"), v) for k, v in peers.items()]
        rows += [(f"medfed, {w} worker(s)", m.get("version", "-"), m) for w, m in medfed.items()]
        _print(rows, floor["files_per_second"], best_rate)
        if targets["speedup"] and targets["speedup_if_cores_free"]:
            least, most = targets["speedup_workers"]
            print(
                f"\nmedfed speed-up {least} → {most} workers: {targets['speedup']:.2f}x measured; "
                f"{targets['speedup_if_cores_free']:.2f}x from CPU per file (a free core each)"
            )
        yes = {True: "met", False: "NOT met"}
        print(
            f"targets: ≥ 2x fastest peer on one core: {yes[targets['met_2x_fastest_peer']]}; "
            f"≥ 60 % of floor: {yes[targets['met_60pct_floor']]}; near-linear "
            f"(≥ 80 % of ideal): {yes[targets['met_near_linear']]}"
        )
        print(f"load average: start {machine['load_average_start']}, end "
              f"{machine['load_average_end']}")  # fmt: skip
        command = "python -m benchmarks.deid " + " ".join(sys.argv[1:])
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "command": command.strip(),
            "corpus": corpus_info,
            "floor": floor,
            "peers": peers,
            "medfed": {str(w): m for w, m in medfed.items()},
            "targets": targets,
            "profile_top_tottime": profile,
            "machine": machine,
            "date": date,
        }
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(HERE.parent)}")
        bad = {w: m for w, m in medfed.items() if not m.get("ok")}
        if bad:
            raise SystemExit(f"medfed did not de-identify the corpus cleanly: {bad}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
