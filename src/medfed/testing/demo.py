"""The demo federation (``make demo``): GBSG2 over three hospitals, federated vs pooled.

It starts a hub (SQLite in a temporary folder) and three node processes on 127.0.0.1.
Each node holds its share of the GBSG2 breast-cancer trial (686 patients), split by tumour
grade and menopausal status so the shares differ in size and case mix. Through the SDK it
runs count, mean, variance and histogram, prints every federated figure beside the pooled
pandas figure and their difference, then shows the disclosure gate withholding a crosstab
that would cross the histogram and a count of a few patients; stops every process and
exits 0 when all agree (1 otherwise).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from medfed.testing.federation import Federation

console = Console()

HISTOGRAM_BINS = [20.0, 40.0, 50.0, 90.0]


def load_gbsg2() -> pd.DataFrame:
    from lifelines.datasets import load_gbsg2 as load

    frame: pd.DataFrame = load()
    return frame


def write_gbsg2(path: Path) -> int:
    """Write the whole GBSG2 table as CSV (``medfed demo --csv``); returns its rows."""
    frame = load_gbsg2()
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return len(frame)


def split_gbsg2(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Fixed rule: grade III → hospital-a; pre-menopausal grade I/II → hospital-b; rest → c."""
    grade3 = frame["tgrade"] == "III"
    pre = frame["menostat"] == "Pre"
    return {
        "hospital-a": frame[grade3].reset_index(drop=True),
        "hospital-b": frame[~grade3 & pre].reset_index(drop=True),
        "hospital-c": frame[~grade3 & ~pre].reset_index(drop=True),
    }


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def run_demo(root: Path | None = None) -> int:
    started = time.perf_counter()
    pooled = load_gbsg2()
    shares = split_gbsg2(pooled)
    ok = True
    with tempfile.TemporaryDirectory(prefix="medfed-demo-") as tmp:
        folder = root or Path(tmp)
        console.print(f"[bold]medfed demo[/bold]: hub + {len(shares)} nodes in {folder}")
        for name, share in shares.items():
            console.print(f"  {name}: {len(share)} patients")
        with Federation(folder, {n: {"gbsg2": s} for n, s in shares.items()}) as fed:
            client = fed.researcher
            rows = Table(title="federated vs pooled (GBSG2, 686 patients)")
            for col in ("statistic", "federated", "pooled", "difference"):
                rows.add_column(col, justify="right" if col != "statistic" else "left")

            def add(name: str, fed_value: float, pooled_value: float, exact: bool) -> None:
                nonlocal ok
                diff = abs(fed_value - pooled_value)
                good = diff == 0 if exact else _rel(fed_value, pooled_value) <= 1e-9
                ok = ok and good
                mark = "" if good else " [red]✗[/red]"
                rows.add_row(name, f"{fed_value:.10g}", f"{pooled_value:.10g}", f"{diff:.2e}{mark}")

            count = client.tasks.run("count", datasets=["gbsg2"], progress=False)
            add("count", count.result.n, len(pooled), exact=True)
            older = client.tasks.run("count", datasets=["gbsg2"], where="age >= 50", progress=False)
            add("count where age >= 50", older.result.n, int((pooled.age >= 50).sum()), exact=True)
            columns = ["age", "tsize", "pnodes", "time"]
            mean = client.tasks.run("mean", datasets=["gbsg2"], columns=columns, progress=False)
            for column in columns:
                add(
                    f"mean {column}", mean.result.columns[column].mean, pooled[column].mean(), False
                )
            var = client.tasks.run("variance", datasets=["gbsg2"], columns=columns, progress=False)
            for column in columns:
                add(
                    f"variance {column}",
                    var.result.columns[column].variance,
                    pooled[column].var(),
                    False,
                )
            hist = client.tasks.run(
                "histogram", datasets=["gbsg2"], column="age", bins=HISTOGRAM_BINS, progress=False
            )
            expected, _ = np.histogram(pooled["age"], bins=HISTOGRAM_BINS)
            for i, (got, want) in enumerate(zip(hist.result.counts, expected, strict=True)):
                label = f"age [{HISTOGRAM_BINS[i]:.0f}, {HISTOGRAM_BINS[i + 1]:.0f})"
                add(f"histogram {label}", got, int(want), exact=True)
            console.print(rows)
            # the disclosure gate at work: answers that would single out 1-4 patients
            crossing = client.tasks.wait(
                client.tasks.submit("crosstab", datasets=["gbsg2"], row="tgrade", col="horTh").id,
                progress=False,
            )
            console.print(
                f"differencing defence: crosstab tgrade x horTh after the age histogram → "
                f"{crossing.withheld_nodes} of 3 node(s) withheld it (its cells would cut a bin "
                f"they released into groups of 1-4 patients); task {crossing.status.value}"
            )
            where = "age >= 60 and menostat == 'Pre'"
            rare = client.tasks.wait(
                client.tasks.submit("count", datasets=["gbsg2"], where=where).id, progress=False
            )
            answer = rare.result["n"] if rare.result is not None else "no result"
            console.print(
                f"threshold: count where {where} → {answer} "
                f"(pooled {int(((pooled.age >= 60) & (pooled.menostat == 'Pre')).sum())}); "
                f"{rare.withheld_nodes} node(s) withheld their count (under 5 patients, or a "
                "split of an earlier answer), never saying which"
            )
    elapsed = time.perf_counter() - started
    verdict = (
        "[green]all federated results equal the pooled ones[/green]"
        if ok
        else "[red]MISMATCH[/red]"
    )
    console.print(f"{verdict} — {elapsed:.1f} s")
    return 0 if ok else 1
