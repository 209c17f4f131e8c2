"""The held-out rows of a training: chosen by medfed at the node, never by plan code.

``split(row_ids, rule)`` orders the node's selected row ids by a permutation seeded with
``rule.seed`` and holds out the first ``round(n · rule.fraction)`` of them; the rest are
the training rows. The same rows and the same rule give the same split in every round,
so a training's row sets are fixed for its whole life, and the node's row-set memory
(:mod:`medfed.node.gate.rowsets`) sees them before any plan code runs: a training whose
training or held-out rows differ from an already released set by 1..k-1 rows is refused.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["HoldoutRule", "split"]

IntArray = npt.NDArray[np.int64]


class HoldoutRule(BaseModel):
    """What fraction of each node's rows is held out for metrics, and the split's seed."""

    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(default=0.2, ge=0, le=0.5)
    seed: int = Field(default=0, ge=0)


def split(row_ids: npt.ArrayLike, rule: HoldoutRule) -> tuple[IntArray, IntArray]:
    """``(train_ids, holdout_ids)``, each sorted, from the node's selected row ids."""
    ids = np.sort(np.asarray(row_ids, dtype=np.int64))
    order = np.random.default_rng(rule.seed).permutation(len(ids))
    n_eval = round(len(ids) * rule.fraction)
    held = np.sort(ids[order[:n_eval]])
    train = np.sort(ids[order[n_eval:]])
    return train, held
