"""Exact analysis at scale (issue 4): federated GLM and Cox against the pooled fits.

Run it as ``.venv/bin/python -m benchmarks.analysis``. Options: ``--rows 100000`` rows per
node for the GLM, ``--nodes 5``, ``--cox-rows 20000`` rows per node for Cox, ``--reps 3``
timed fits of each kind, ``--quick`` (5 000 / 500 rows, 1 repetition), ``--hub-env
NAME=VALUE`` for the hub process. A full run takes about 20 minutes on 2 cores, nearly all of
it in the federated Cox fits (see ``docs/benchmarks.md``). How it runs:

1. Data. It fits simple distributions to GBSG2 (``lifelines.datasets.load_gbsg2``, 686
   patients): the joint frequencies of horTh, menostat and tgrade; per menopausal status a
   multivariate normal over age, log tsize, log pnodes, log1p progrec, log1p estrec; a
   Weibull AFT model (lifelines) of the event time on the covariates; a Weibull model of
   the censoring time; follow-up ends at GBSG2's last day (2659). It draws
   ``nodes * rows`` patients with a fixed seed (integers clipped to GBSG2's ranges, time
   in whole days, ``cens`` = 1 when the event comes before censoring and the end of
   follow-up), adds ``enodes = exp(-0.12 pnodes)`` (Sauerbrei & Royston's transform), and
   gives node *i* rows ``i·rows …``; its first ``cox-rows`` rows are its Cox dataset.
2. Federated. A :class:`~medfed.testing.federation.Federation` (hub on SQLite, one node
   process per share, each holding two CSV datasets, ``synth`` and ``synth_cox``) in a
   temporary folder on 127.0.0.1. One untimed warm-up, then ``--reps`` times
   ``researcher.tasks.run("glm", …)`` (binomial, ``cens`` on :data:`COVARIATES`) and as
   many ``cox`` tasks (``time``, ``cens``, Efron), each timed end to end through the SDK
   (submit, every round, result parsed). After the federation stops it reads the hub's
   run rows to split each task into rounds: dispatch, the nodes' local steps, the hub's
   aggregation, and the bytes each node sent.
3. Pooled, in this process, on the concatenated frame, after one warm-up:
   ``statsmodels`` ``GLM.from_formula`` (patsy builds the design matrix inside the timing)
   and ``lifelines.CoxPHFitter().fit(formula=…)`` (Efron, lifelines' default precision),
   the same number of times; for the GLM also ``statsmodels.api.GLM(y, X).fit()`` on a
   design matrix built beforehand (the fit alone). Coefficients and standard errors are
   compared (largest relative difference); Cox also with lifelines run to convergence.

It prints a table and writes ``benchmarks/results/analysis.json`` (figures, sizes,
machine, load average). Every process is stopped on the way out (the ``with Federation``
block), every wait has a timeout, everything listens on 127.0.0.1; a failed step keeps its
temporary folder and prints the log tails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table
from sqlalchemy import select

from benchmarks.dispatch import CpuMeter, Laps, console, machine, workdir
from medfed.common.timeutil import aware
from medfed.hub.config import HubSettings
from medfed.hub.db.models import Run, Task
from medfed.hub.db.session import make_engine, make_sessionmaker
from medfed.testing.federation import Federation

RESULTS = Path(__file__).resolve().parent / "results" / "analysis.json"
SEED = 20240504
NUMERIC = ["age", "tsize", "pnodes", "progrec", "estrec"]
CATEGORICAL = ["horTh", "menostat", "tgrade"]
COVARIATES = [*NUMERIC, "enodes", *CATEGORICAL]  # 6 numeric + 4 dummy columns
FORMULA = " + ".join(COVARIATES)
FOLLOW_UP_DAYS = 2659
TASK_TIMEOUT_S = 540.0
TARGET_FACTOR, TARGET_SLACK_S = 3.0, 0.5


# --- data: distributions fitted to GBSG2 --------------------------------------------------


def _features(frame: pd.DataFrame) -> pd.DataFrame:
    """Covariates of the fitted time models (log scales, dummies), one row per patient."""
    return pd.DataFrame(
        {
            "age": frame["age"].astype(float),
            "log_tsize": np.log(frame["tsize"]),
            "enodes": np.exp(-0.12 * frame["pnodes"]),
            "log_progrec": np.log1p(frame["progrec"]),
            "log_estrec": np.log1p(frame["estrec"]),
            "horTh_yes": (frame["horTh"] == "yes").astype(float),
            "menostat_Pre": (frame["menostat"] == "Pre").astype(float),
            "tgrade_II": (frame["tgrade"] == "II").astype(float),
            "tgrade_III": (frame["tgrade"] == "III").astype(float),
        }
    )


def _logged(frame: pd.DataFrame) -> np.ndarray:
    return np.column_stack(
        [
            frame["age"],
            np.log(frame["tsize"]),
            np.log(frame["pnodes"]),
            np.log1p(frame["progrec"]),
            np.log1p(frame["estrec"]),
        ]
    ).astype(float)


@dataclass
class Gbsg2Model:
    cells: pd.Series  # probability of each (horTh, menostat, tgrade)
    normal: dict[str, tuple[np.ndarray, np.ndarray]]  # menostat → (mean, cov) of _logged
    bounds: dict[str, tuple[int, int]]
    log_lambda: pd.Series  # Weibull AFT: log scale = Intercept + features · coefficients
    rho: float
    censor_lambda: float
    censor_rho: float

    @classmethod
    def fit(cls) -> Gbsg2Model:
        from lifelines import WeibullAFTFitter, WeibullFitter
        from lifelines.datasets import load_gbsg2

        data = load_gbsg2()
        cells = data.groupby(CATEGORICAL).size() / len(data)
        normal = {}
        for status, part in data.groupby("menostat"):
            z = _logged(part)
            normal[str(status)] = (z.mean(axis=0), np.cov(z, rowvar=False))
        bounds = {c: (int(data[c].min()), int(data[c].max())) for c in NUMERIC}
        aft = WeibullAFTFitter().fit(
            _features(data).assign(time=data["time"], cens=data["cens"]), "time", "cens"
        )
        censor = WeibullFitter().fit(data["time"], 1 - data["cens"])
        return cls(
            cells=cells,
            normal=normal,
            bounds=bounds,
            log_lambda=aft.params_["lambda_"],
            rho=float(np.exp(aft.params_["rho_"]["Intercept"])),
            censor_lambda=float(censor.lambda_),
            censor_rho=float(censor.rho_),
        )

    def draw(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        picks = rng.choice(len(self.cells), size=n, p=self.cells.to_numpy())
        keys = pd.DataFrame(list(self.cells.index), columns=CATEGORICAL).iloc[picks]
        frame = keys.reset_index(drop=True)
        z = np.empty((n, len(NUMERIC)))
        for status, (mean, cov) in self.normal.items():
            rows = np.flatnonzero(frame["menostat"].to_numpy() == status)
            z[rows] = rng.multivariate_normal(mean, cov, size=len(rows))
        back = [z[:, 0], np.exp(z[:, 1]), np.exp(z[:, 2]), np.expm1(z[:, 3]), np.expm1(z[:, 4])]
        for column, values in zip(NUMERIC, back, strict=True):
            low, high = self.bounds[column]
            frame[column] = np.clip(np.rint(values), low, high).astype(np.int64)
        features = _features(frame)
        coef = self.log_lambda.drop("Intercept")
        scale = np.exp(self.log_lambda["Intercept"] + features[coef.index].to_numpy() @ coef)
        event = scale * rng.weibull(self.rho, n)
        censor = self.censor_lambda * rng.weibull(self.censor_rho, n)
        ends = np.minimum(censor, FOLLOW_UP_DAYS)
        frame["time"] = np.clip(np.ceil(np.minimum(event, ends)), 1, FOLLOW_UP_DAYS).astype(int)
        frame["cens"] = (event <= ends).astype(np.int64)
        frame["enodes"] = np.exp(-0.12 * frame["pnodes"]).round(6)
        return frame[[*COVARIATES, "time", "cens"]]


# --- timing -------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], reps: int) -> tuple[list[float], Any]:
    """``reps`` wall-clock seconds of ``fn()`` after one untimed warm-up; the last value."""
    value = fn()
    seconds = []
    for _ in range(reps):
        started = time.perf_counter()
        value = fn()
        seconds.append(time.perf_counter() - started)
    return seconds, value


def max_rel(got: Sequence[float], want: Sequence[float]) -> float:
    a, b = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def rounds_of(root: Path, task_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Per task, from the hub's rows (hub stopped): its rounds and where their time went."""
    settings = HubSettings(data_dir=root / "hub", dev_mode=True)
    engine = make_engine(settings.effective_database_url)
    out = []
    try:
        with make_sessionmaker(engine)() as session:
            for task_id in task_ids:
                task = session.get(Task, task_id)
                runs = list(session.scalars(select(Run).where(Run.task_id == task_id)))
                if task is None or task.finished_at is None or not runs:
                    continue
                by_round: dict[int, list[Run]] = {}
                for run in runs:
                    by_round.setdefault(run.round, []).append(run)
                legs = {"dispatch": 0.0, "local": 0.0, "node_other": 0.0, "hub": 0.0}
                sent = []
                previous_end = aware(task.created_at).timestamp()
                for number in sorted(by_round):
                    group = by_round[number]
                    created = min(aware(r.created_at).timestamp() for r in group)
                    claimed = max(aware(r.claimed_at).timestamp() for r in group if r.claimed_at)
                    ended = max(aware(r.finished_at).timestamp() for r in group if r.finished_at)
                    local = max(r.duration_s or 0.0 for r in group)
                    legs["hub"] += max(created - previous_end, 0.0)
                    legs["dispatch"] += claimed - created
                    legs["local"] += local
                    legs["node_other"] += max(ended - claimed - local, 0.0)
                    sent.append(max(len(json.dumps(r.output or {})) for r in group))
                    previous_end = ended
                legs["hub"] += aware(task.finished_at).timestamp() - previous_end
                out.append(
                    {
                        "task_id": task_id,
                        "rounds": len(by_round),
                        "legs_s": {k: round(v, 3) for k, v in legs.items()},
                        "largest_output_bytes_per_round": {
                            "median": int(statistics.median(sent)),
                            "max": max(sent),
                        },
                    }
                )
    finally:
        engine.dispose()
    return out


def _glm_pooled(pooled: pd.DataFrame) -> Callable[[], Any]:
    import statsmodels.api as sm

    return lambda: sm.GLM.from_formula(
        f"cens ~ {FORMULA}", data=pooled, family=sm.families.Binomial()
    ).fit()


def _glm_pooled_fit_only(pooled: pd.DataFrame) -> Callable[[], Any]:
    """statsmodels on a design matrix patsy built beforehand (outside the timing)."""
    import patsy
    import statsmodels.api as sm

    y, x = patsy.dmatrices(f"cens ~ {FORMULA}", pooled, return_type="dataframe")
    return lambda: sm.GLM(y, x, family=sm.families.Binomial()).fit()


def _cox_pooled(pooled: pd.DataFrame, **fit_options: float) -> Callable[[], Any]:
    from lifelines import CoxPHFitter

    def fit() -> Any:
        return CoxPHFitter().fit(
            pooled,
            duration_col="time",
            event_col="cens",
            formula=FORMULA,
            fit_options=fit_options or None,
        )

    return fit


def summarise(
    fed_s: list[float], pooled_s: list[float], runs: list[dict[str, Any]]
) -> dict[str, Any]:
    fed, pooled = statistics.median(fed_s), statistics.median(pooled_s)
    target = TARGET_FACTOR * pooled + TARGET_SLACK_S
    rounds = statistics.median(r["rounds"] for r in runs) if runs else None
    names = runs[0]["legs_s"] if runs else {}
    legs = {k: statistics.median(r["legs_s"][k] for r in runs) for k in names}
    return {
        "federated_s": {"median": round(fed, 3), "all": [round(s, 3) for s in fed_s]},
        "pooled_s": {"median": round(pooled, 3), "all": [round(s, 3) for s in pooled_s]},
        "ratio": round(fed / pooled, 2),
        "target_s": round(target, 3),
        "target_met": fed <= target,
        "rounds": rounds,
        "per_round_s": round(fed / rounds, 3) if rounds else None,
        "legs_s_median": legs,
        "tasks": runs,
    }


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    laps = Laps()
    model = Gbsg2Model.fit()
    rng = np.random.default_rng(SEED)
    frames = [model.draw(args.rows, rng) for _ in range(args.nodes)]
    pooled = pd.concat(frames, ignore_index=True)
    pooled_cox = pd.concat([f.iloc[: args.cox_rows] for f in frames], ignore_index=True)
    shares = {
        f"node-{i:02d}": {"synth": f, "synth_cox": f.iloc[: args.cox_rows]}
        for i, f in enumerate(frames)
    }
    data = {
        "glm_rows": len(pooled),
        "cox_rows": len(pooled_cox),
        "event_fraction": round(float(pooled["cens"].mean()), 3),
        "cox_distinct_event_times": int(pooled_cox.loc[pooled_cox["cens"] == 1, "time"].nunique()),
        "rows_at_end_of_follow_up": int((pooled_cox["time"] == FOLLOW_UP_DAYS).sum()),
    }
    laps.lap("data")
    glm_params = {
        "outcome": "cens",
        "covariates": COVARIATES,
        "categorical": CATEGORICAL,
        "family": "binomial",
    }
    cox_params = {
        "duration": "time",
        "event": "cens",
        "covariates": COVARIATES,
        "categorical": CATEGORICAL,
        "ties": "efron",
    }
    with workdir() as root:
        hub_env = dict(item.split("=", 1) for item in args.hub_env)
        with Federation(root, shares, heartbeat_seconds=5.0, hub_env=hub_env) as fed:
            laps.lap("federation_start")
            tasks = fed.researcher.tasks
            ids: dict[str, list[int]] = {"glm": [], "cox": []}

            def federated(algorithm: str, dataset: str, params: dict[str, Any]) -> Any:
                result = tasks.run(
                    algorithm,
                    datasets=[dataset],
                    progress=False,
                    timeout=TASK_TIMEOUT_S,
                    **params,
                )
                ids[algorithm].append(result.task_id)
                return result

            meter = CpuMeter(fed)
            glm_fed_s, glm_fed = timed(lambda: federated("glm", "synth", glm_params), args.reps)
            glm_cpu = meter.per_task_ms(args.reps + 1)
            laps.lap("glm_federated")
            meter = CpuMeter(fed)
            cox_fed_s, cox_fed = timed(lambda: federated("cox", "synth_cox", cox_params), args.reps)
            cox_cpu = meter.per_task_ms(args.reps + 1)
            laps.lap("cox_federated")
        laps.lap("federation_stop")
        glm_runs = rounds_of(root, ids["glm"][1:])
        cox_runs = rounds_of(root, ids["cox"][1:])
    glm_pool_s, glm_pool = timed(_glm_pooled(pooled), args.reps)
    laps.lap("glm_pooled")
    glm_fit_only_s, _ = timed(_glm_pooled_fit_only(pooled), args.reps)
    laps.lap("glm_pooled_fit_only")
    cox_pool_s, cox_pool = timed(_cox_pooled(pooled_cox), args.reps)
    cox_tight = _cox_pooled(pooled_cox, precision=1e-14, r_precision=1e-16)()
    laps.lap("cox_pooled")

    glm = summarise(glm_fed_s, glm_pool_s, glm_runs)
    fit_only = statistics.median(glm_fit_only_s)
    glm["pooled_fit_only_s"] = {
        "median": round(fit_only, 3),
        "all": [round(v, 3) for v in glm_fit_only_s],
    }
    glm["ratio_fit_only"] = round(glm["federated_s"]["median"] / fit_only, 2)
    names = [c.name for c in glm_fed.result.coefficients]
    glm["agreement"] = {
        "coef_max_rel_diff": max_rel(
            [c.estimate for c in glm_fed.result.coefficients], glm_pool.params[names]
        ),
        "se_max_rel_diff": max_rel(
            [c.std_error for c in glm_fed.result.coefficients], glm_pool.bse[names]
        ),
        "deviance_rel_diff": max_rel([glm_fed.result.deviance], [glm_pool.deviance]),
        "iterations": {"federated": glm_fed.result.iterations, "statsmodels": None},
    }
    glm["agreement"]["iterations"]["statsmodels"] = int(glm_pool.fit_history["iteration"])
    glm["coefficients"] = names
    glm["cpu_ms_per_task"] = glm_cpu

    cox = summarise(cox_fed_s, cox_pool_s, cox_runs)
    res = cox_fed.result
    cox["agreement"] = {
        "coef_max_rel_diff": max_rel(res.coef, cox_pool.params_[res.covariates]),
        "se_max_rel_diff": max_rel(res.se, cox_pool.standard_errors_[res.covariates]),
        "coef_max_rel_diff_converged": max_rel(res.coef, cox_tight.params_[res.covariates]),
        "se_max_rel_diff_converged": max_rel(res.se, cox_tight.standard_errors_[res.covariates]),
        "loglik_rel_diff_converged": max_rel([res.log_likelihood], [cox_tight.log_likelihood_]),
        "coarsened": res.coarsened,
        "iterations": res.iterations,
    }
    cox["coefficients"] = res.covariates
    cox["cpu_ms_per_task"] = cox_cpu
    return {"data": data, "glm": glm, "cox": cox, "phases_s": laps.seconds}


# --- report -------------------------------------------------------------------------------


def print_table(results: dict[str, Any]) -> None:
    s = results["settings"]
    table = Table(
        title=f"{s['nodes']} nodes, median of {s['reps']} fits in seconds (federated: SDK "
        "submit → result; pooled: statsmodels / lifelines in one process)"
    )
    columns = ["fit", "rows", "fed", "pooled", "ratio", "target", "", "rounds", "s/round"]
    for column in [*columns, "coef diff", "se diff"]:
        table.add_column(column, justify="left" if column == "fit" else "right", no_wrap=True)
    for name in ("glm", "cox"):
        e = results[name]
        a = e["agreement"]
        table.add_row(
            name.upper(),
            f"{results['data'][name + '_rows']:,}",
            f"{e['federated_s']['median']:.2f}",
            f"{e['pooled_s']['median']:.2f}",
            f"{e['ratio']:.1f}x",
            f"<= {e['target_s']:.2f}",
            "met" if e["target_met"] else "MISSED",
            str(e["rounds"]),
            f"{e['per_round_s']:.3f}",
            f"{a['coef_max_rel_diff']:.1e}",
            f"{a['se_max_rel_diff']:.1e}",
        )
    console.print(table)
    legs = Table(title="federated task by leg, seconds (median task; legs summed over rounds)")
    legs.add_column("fit")
    for column in ("dispatch", "local", "node other", "hub", "hub CPU", "node output/round"):
        legs.add_column(column, justify="right")
    for name in ("glm", "cox"):
        e = results[name]
        size = e["tasks"][0]["largest_output_bytes_per_round"]["median"] if e["tasks"] else 0
        hub_cpu = e["cpu_ms_per_task"]["hub"]
        legs.add_row(
            name.upper(),
            *(f"{v:.3f}" for v in e["legs_s_median"].values()),
            "n/a" if hub_cpu is None else f"{hub_cpu / 1000:.2f}",
            f"{size:,} B",
        )
    console.print(legs)
    glm = results["glm"]
    console.print(
        f"GLM pooled without design building (patsy outside the timing): "
        f"{glm['pooled_fit_only_s']['median']:.2f} s; federated / that = "
        f"{glm['ratio_fit_only']:.1f}x"
    )
    cox = results["cox"]["agreement"]
    console.print(
        f"Cox vs lifelines run to convergence: coef {cox['coef_max_rel_diff_converged']:.1e}, "
        f"se {cox['se_max_rel_diff_converged']:.1e}; coarsened: {cox['coarsened']}"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.analysis",
        description="Federated GLM and Cox at scale against statsmodels and lifelines.",
    )
    parser.add_argument("--rows", type=int, default=100_000, help="GLM rows per node")
    parser.add_argument("--nodes", type=int, default=5, help="node processes")
    parser.add_argument("--cox-rows", type=int, default=20_000, help="Cox rows per node")
    parser.add_argument("--reps", type=int, default=3, help="timed fits of each kind")
    parser.add_argument(
        "--quick", action="store_true", help="5 000 / 500 rows per node, 1 repetition"
    )
    parser.add_argument(
        "--hub-env",
        action="append",
        default=[],
        metavar="MEDFED_X=VALUE",
        help="extra hub environment variable (repeatable), as in benchmarks.dispatch",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.cox_rows, args.reps = min(args.rows, 5000), min(args.cox_rows, 500), 1
    if any("=" not in item for item in args.hub_env):
        parser.error("--hub-env takes NAME=VALUE")
    if not 1 <= args.nodes <= 20 or args.reps < 1:
        parser.error("--nodes must be between 1 and 20 and --reps at least 1")
    if args.rows < 100 or not 100 <= args.cox_rows <= args.rows:
        parser.error("--rows must be at least 100 and --cox-rows between 100 and --rows")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "analysis",
        "command": " ".join([".venv/bin/python -m benchmarks.analysis", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "settings": {
            "rows_per_node": args.rows,
            "cox_rows_per_node": args.cox_rows,
            "nodes": args.nodes,
            "reps": args.reps,
            "seed": SEED,
            "covariates": COVARIATES,
            "categorical": CATEGORICAL,
            "quick": args.quick,
            "hub_env": args.hub_env,
        },
        "target": f"federated median <= {TARGET_FACTOR:g} x pooled median + {TARGET_SLACK_S} s",
    }
    console.print(
        f"{args.nodes} nodes, {args.rows:,} rows each (GLM), {args.cox_rows:,} rows each (Cox), "
        f"{args.reps} repetitions …"
    )
    results |= run_benchmark(args)
    results["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    print_table(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.output} ({results['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
