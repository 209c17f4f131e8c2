"""A ready training plan and data split for tests, benchmarks and the docs.

``TABULAR_LOGREG`` is the source of a plan: logistic regression (or, with ``hidden > 0``
in its args, a one-hidden-layer MLP) on numeric feature columns ``f0…`` and a 0/1 column
``label``, standardized with means and scales given in the training's ``plan_args``
(computed federatedly or from a reference sample; the plan never computes them from one
node's rows). medfed holds out each node's rows for metrics (the training's
``holdout`` rule); the plan only predicts probabilities for them (``predict``).

:func:`breast_cancer_shares` splits ``sklearn.datasets.load_breast_cancer`` into a
common test set and ``nodes`` shares with Dirichlet(alpha) label skew (fixed seed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["TABULAR_LOGREG", "breast_cancer_shares"]

TABULAR_LOGREG = '''"""Logistic regression (or a small MLP) on standardized numeric columns."""
import torch
from torch.utils.data import TensorDataset


def _features(args):
    return [f"f{i}" for i in range(int(args["features"]))]


def model(args):
    torch.manual_seed(int(args.get("init_seed", 0)))
    n, hidden = int(args["features"]), int(args.get("hidden", 0))
    if hidden:
        return torch.nn.Sequential(
            torch.nn.Linear(n, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )
    return torch.nn.Sequential(torch.nn.Linear(n, 1))


def tensors(frame, args):
    y = frame["label"].to_numpy(dtype="float32").reshape(-1, 1)
    return features(frame, args), torch.from_numpy(y)


def features(frame, args):
    x = frame[_features(args)].to_numpy(dtype="float32")
    x = (x - torch.tensor(args["mean"]).numpy()) / torch.tensor(args["scale"]).numpy()
    return torch.from_numpy(x.astype("float32"))


def train_set(frame, args):
    x, y = tensors(frame, args)
    return TensorDataset(x, y)


def loss(model, batch):
    x, y = batch
    return torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)


def predict(model, frame, args):
    x = features(frame, args).to(next(model.parameters()).device)
    return torch.sigmoid(model(x)).reshape(-1)
'''


def breast_cancer_shares(
    nodes: int = 5, *, alpha: float = 0.5, seed: int = 0, test_fraction: float = 0.3
) -> tuple[list[pd.DataFrame], pd.DataFrame]:
    """``nodes`` label-skewed shares (Dirichlet ``alpha``) and a common test frame.

    Columns are ``f0…f29`` and ``label``. Each share gets at least 20 rows.
    """
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    frame = pd.DataFrame(data.data, columns=[f"f{i}" for i in range(data.data.shape[1])])
    frame["label"] = data.target.astype(int)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(frame))
    n_test = round(len(frame) * test_fraction)
    test = frame.iloc[order[:n_test]].reset_index(drop=True)
    train = frame.iloc[order[n_test:]].reset_index(drop=True)
    while True:
        parts: list[list[int]] = [[] for _ in range(nodes)]
        for label in (0, 1):
            idx = np.flatnonzero(train["label"].to_numpy() == label)
            rng.shuffle(idx)
            props = rng.dirichlet([alpha] * nodes)
            cuts = (np.cumsum(props) * len(idx)).astype(int)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(int(i) for i in chunk)
        if min(len(p) for p in parts) >= 20:
            break
    shares = [train.iloc[sorted(p)].reset_index(drop=True) for p in parts]
    return shares, test
