"""The node's step of ``validation``: score the test rows, then counts, sums and GLM sums.

Round 0 at a node (``ValidationServices`` from the node, see :mod:`.scoring`):

1. A shared study needs the site steward's consent (``medfed validation consent``); a
   site without it withholds its answer — it contributes nothing.
2. The test rows: the dataset's rows matching ``where`` with no missing feature or
   outcome; for a model from medfed's registry trained here, its training rows are left
   out (the training's split, recomputed: :func:`medfed.algorithms.learning.holdout.split`).
   For an image model the rows are the imaging index's files with pixels (``rows`` not
   missing), joined to the ``labels`` table by its key (:func:`_image_rows`).
3. The features — or the images, read and preprocessed by :func:`.images.load_images`
   — go to the model (in the node's sandbox); each row gets a score.
4. The histograms per class on the fine grid, coarsened (:mod:`.binning`), for the
   overall rows and each released subgroup variable; per group the sum of squared errors
   (Brier) and, per calibration bin, the sum of scores.
5. The GLM's round-0 answer for ``y ~ logit(score)`` (the federated GLM's own local step
   over a two-column table of these rows): the recalibration intercept and slope.

Later rounds answer the GLM's IRLS sums at the hub's coefficients: the outcomes and
scores of round 0 are kept by the node's services (``remember``/``recall``, keyed by the
parameters and the dataset) and never sent; without them the rows are selected and
scored again. What leaves, round 0::

    {<glm round-0 keys: rows, kinds, levels, outcome_counts, sums, boundary>,
     "vcounts": {"overall": {"": [[neg per leaf], [pos per leaf]]},
                 variable: {level: [[...], [...]]}},
     "vlayout": {"grid": B, "cuts": [...], "leaves": [[lo, hi], ...],
                 "withheld": [variables], "share_site": bool},
     "vsums": {"overall": {"": {"sse": .., "score": [per calibration bin]}}, variable: ...}}
"""

from __future__ import annotations

import hashlib
import json
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from medfed.algorithms.base import LocalContext
from medfed.algorithms.learning.holdout import split
from medfed.algorithms.validation.binning import fine_bins, layout, leaf_counts
from medfed.algorithms.validation.images import load_images
from medfed.algorithms.validation.params import IMAGE_COLUMNS, Subgroup, ValidationParams
from medfed.algorithms.validation.recalibrate import EPS
from medfed.algorithms.validation.scoring import ValidationServices
from medfed.common.errors import Refused
from medfed.common.filters import And

__all__ = ["EPS", "glm_params", "local_step", "logit", "subgroup_levels"]

MISSING = "(missing)"


def logit(scores: np.ndarray) -> np.ndarray:
    s = np.clip(np.asarray(scores, dtype=np.float64), EPS, 1.0 - EPS)
    return np.asarray(np.log(s) - np.log1p(-s), dtype=np.float64)


def glm_params(params: ValidationParams) -> Any:
    from medfed.algorithms.glm.design import GLMParams

    return GLMParams(
        outcome="y",
        covariates=["logit_score"],
        family="binomial",
        max_iter=params.max_iter,
        tol=params.tol,
    )


def _services(ctx: LocalContext) -> ValidationServices:
    services = ctx.services
    if services is not None and not isinstance(services, ValidationServices):
        from medfed.node.executors.onnx_services import adapt  # the agent's run services

        services = adapt(services)
    if not isinstance(services, ValidationServices):
        raise Refused("validation: this node runs no models (no model executor)")
    return services


def subgroup_levels(frame: pd.DataFrame, group: Subgroup) -> pd.Series:
    """Each row's level of ``group`` as text (missing values a level of their own)."""
    values = frame[group.column]
    if group.bands is None:
        out = values.map(lambda v: MISSING if pd.isna(v) else str(v))
        return out.astype(object)
    edges = group.bands
    names = [f"<{edges[0]:g}"]
    names += [f"{a:g}-{b:g}" for a, b in pairwise(edges)]
    names.append(f">={edges[-1]:g}")
    numeric = pd.to_numeric(values, errors="coerce")
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), numeric.to_numpy(), "right")
    labels = [names[i] for i in index]
    return pd.Series(
        [MISSING if pd.isna(v) else lab for v, lab in zip(numeric, labels, strict=False)],
        index=frame.index,
        dtype=object,
    )


def _image_rows(
    params: ValidationParams, ctx: LocalContext, services: ValidationServices
) -> pd.DataFrame:
    """The imaging index's files with pixels, joined to the labels table (if any)."""
    present = {c.name for c in ctx.data.columns}
    labels = params.labels
    own = [c for c in params.columns if c in present]
    frame = ctx.data.select(own, params.filter).dropna(subset=IMAGE_COLUMNS)
    if labels is None:
        return frame
    table = services.table(labels.dataset)
    wanted = [labels.key, *[c for c in params.columns if c not in present]]
    have = {c.name for c in table.columns}
    for name in wanted:
        if name not in have:
            raise Refused(f"validation: the labels table '{labels.dataset}' has no column '{name}'")
    joined = table.select(list(dict.fromkeys(wanted))).dropna(subset=[labels.key])
    if joined[labels.key].duplicated().any():
        raise Refused(
            f"validation: the labels table '{labels.dataset}' holds more than one row per "
            f"'{labels.key}'"
        )
    extra = joined.set_index(labels.key)
    extra = extra[[c for c in extra.columns if c not in frame.columns]]
    return frame.join(extra, on=labels.key, how="inner")


def select_rows(
    params: ValidationParams, ctx: LocalContext, services: ValidationServices
) -> tuple[pd.DataFrame, np.ndarray]:
    """The test rows (features, subgroup columns) and their outcome (0/1)."""
    if params.model.image is not None:
        frame = _image_rows(params, ctx, services)
    else:
        frame = ctx.data.select(params.columns, params.filter)
    needed = list(params.model.features)
    if params.outcome.column is not None:
        needed.append(params.outcome.column)
    frame = frame.dropna(subset=needed)
    exclude = params.exclude_training
    if exclude is not None and services.dataset_id in exclude.dataset_ids:
        trained = ctx.data.select(exclude.columns)
        train_ids, _ = split(trained.index.to_numpy(), exclude.holdout)
        frame = frame.drop(index=frame.index.intersection(pd.Index(train_ids)))
    if params.outcome.column is not None:
        column = frame[params.outcome.column]
        y = (column == params.outcome.positive).to_numpy(dtype=np.int64)
    else:
        f = params.outcome.filter
        assert f is not None
        both = f if params.filter is None else And(filters=[params.filter, f])
        positive = ctx.data.select(params.model.features[:1], both).index
        y = frame.index.isin(positive).astype(np.int64)
    return frame, y


def local_step(params: ValidationParams, ctx: LocalContext) -> dict[str, Any]:
    from medfed.algorithms.glm.irls import GLM
    from medfed.node.stores.tables import TableStore

    services = _services(ctx)
    share_site = params.mode == "private"
    if params.mode == "shared":
        consent = services.consent(params.study_id, params.model.sha256)
        if consent is None or not consent.take_part:
            raise Refused(
                f"validation: study {params.study_id} is shared and this site's steward "
                "has not consented to it"
            )
        share_site = consent.share_site
    key = hashlib.sha256(
        json.dumps([params.model_dump(mode="json"), services.dataset_id], sort_keys=True).encode()
    ).hexdigest()
    kept = services.recall(key) if ctx.round > 0 else None
    if kept is None:
        frame, y = select_rows(params, ctx, services)
        image = params.model.image
        if image is not None:
            paths = [str(p) for p in frame["path"]]
            features = load_images(paths, services.image_root(), image)
        else:
            features = frame[params.model.features].to_numpy(dtype=np.float32)
        scores = services.score(params.model, features) if len(frame) else np.zeros(0)
        services.remember(key, y, scores)
    else:
        y, scores = kept
    derived = TableStore(
        pd.DataFrame({"y": y.astype(np.float64), "logit_score": logit(scores)}), name="scores"
    )
    sub = LocalContext(
        data=derived,
        round=ctx.round,
        state=dict(ctx.state.get("glm", {})),
        min_cell_count=ctx.min_cell_count,
        min_rows=ctx.min_rows,
        max_param_fraction=ctx.max_param_fraction,
        min_residual_df=ctx.min_residual_df,
    )
    glm_out = GLM().local(glm_params(params), sub)
    if ctx.round > 0:
        return {**glm_out, "vcounts": {}}
    assert kept is None
    ctx.cells(pd.Series(y, index=frame.index))
    return {**glm_out, **_counts(params, ctx.min_cell_count, frame, y, scores, share_site)}


def _counts(
    params: ValidationParams,
    k: int,
    frame: pd.DataFrame,
    y: np.ndarray,
    scores: np.ndarray,
    share_site: bool,
) -> dict[str, Any]:
    grid = params.grid
    bins = fine_bins(scores, grid)
    members: dict[str, dict[str, np.ndarray]] = {"overall": {"": np.ones(len(y), dtype=bool)}}
    for group in params.subgroups:
        levels = subgroup_levels(frame, group).to_numpy()
        members[group.name] = {str(v): levels == v for v in sorted(set(levels))}
    hists = {
        name: {
            level: np.stack(
                [np.bincount(bins[mask & (y == c)], minlength=grid) for c in (0, 1)]
            ).astype(np.int64)
            for level, mask in levels.items()
        }
        for name, levels in members.items()
    }
    cal = params.calibration_index
    shape = layout(hists, params.threshold_index, cal, grid, k)
    kept_cal = [0, *[c for c in shape.cuts if c in set(cal)], grid]
    cal_bin = np.searchsorted(np.asarray(kept_cal), bins, side="right") - 1
    counts: dict[str, Any] = {}
    sums: dict[str, Any] = {}
    for name in ["overall", *shape.released]:
        counts[name] = {}
        sums[name] = {}
        for level, mask in members[name].items():
            counts[name][level] = leaf_counts(hists[name][level], shape.leaves)
            s, t = scores[mask], y[mask]
            by_bin = np.bincount(cal_bin[mask], weights=s, minlength=len(kept_cal) - 1)
            sums[name][level] = {
                "sse": float(np.sum((s - t) ** 2)),
                "score": [float(v) for v in by_bin],
            }
    return {
        "vcounts": counts,
        "vlayout": {
            "grid": grid,
            "cuts": shape.cuts,
            "calibration": kept_cal,
            "leaves": [[a, b] for a, b in shape.leaves],
            "withheld": [g.name for g in params.subgroups if g.name not in shape.released],
            "share_site": share_site,
        },
        "vsums": sums,
    }
