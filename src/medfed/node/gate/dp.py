"""dp mode: calibrated noise on a local output, with OpenDP's mechanisms and privacy maps.

How it runs: a node whose policy says ``mode = "dp"`` runs an algorithm's local step with
``LocalContext.dp`` set; the step clamps what it sums to public bounds and returns exact
aggregates, and :meth:`Algorithm.noise` declares every key of that output
(:mod:`medfed.algorithms.dp`). :func:`privatize` then

1. copies the output into plain JSON data (:func:`medfed.node.gate.rules.plain`) and
   checks that every key is declared exactly once (an undeclared key would leave exactly);
2. splits the run's ε equally over the :class:`~medfed.algorithms.dp.Noise`
   declarations (sequential composition: the parts add up to the run's ε);
3. per declaration, takes its L1 sensitivity under adding or removing one row —
   counts: ``rows`` (OpenDP's ``make_count`` is 1-stable); sums: the sum over its entries
   of OpenDP's stability of clamp-then-sum for the entry's bounds (``max(|low|, |high|)``
   for a range on one side of zero, ``high - low`` for one across zero, plus OpenDP's
   allowance for floating-point summation, about 1e-8 of it) — and finds with
   ``binary_search_param`` the smallest Laplace scale whose OpenDP privacy map stays
   within the part's ε;
4. adds the noise with that OpenDP measurement: the discrete Laplace on integers for
   counts (results stay integers, unbiased), OpenDP's float Laplace for sums.

The :class:`Release` records say, per mechanism, its sensitivity, scale and OpenDP's own
``map(d_in)``; their ε add up to at most the run's ε, which is what the budget
(:mod:`medfed.node.gate.budget`) charged before the local step ran. No output rule or
row-set rule runs in dp mode: withholding on exact counts would itself tell something.

OpenDP (``medfed[node]``) is imported when a dp run happens, never at import time.
Noise comes from OpenDP's own sampler (a CSPRNG in its Rust core); it takes no seed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from medfed.algorithms.dp import Bounds, DPRule, Noise, Public
from medfed.common.extras import needed
from medfed.node.gate.rules import plain

__all__ = ["Release", "count_sensitivity", "privatize", "sum_sensitivity"]


@dataclass(frozen=True)
class Release:
    """One noisy release of a dp run, as OpenDP accounts it."""

    keys: tuple[str, ...]
    integer: bool
    #: L1 sensitivity of the released vector under adding or removing one row
    sensitivity: float
    scale: float
    #: OpenDP's privacy map of the measurement at ``sensitivity``
    epsilon: float


def _opendp() -> Any:
    with needed("node"):
        import opendp.prelude as dp
    dp.enable_features("contrib")
    return dp


@functools.lru_cache(maxsize=256)
def sum_sensitivity(bounds: Bounds) -> float:
    """OpenDP's stability of clamp-then-sum over floats at one row added or removed."""
    dp = _opendp()
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    clamp = dp.t.make_clamp(domain, dp.symmetric_distance(), bounds=(bounds[0], bounds[1]))
    return float((clamp >> dp.t.then_sum()).map(1))


def count_sensitivity() -> int:
    """OpenDP's stability of a row count at one row added or removed (1)."""
    dp = _opendp()
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    return int(dp.t.make_count(domain, dp.symmetric_distance()).map(1))


def _leaves(value: Any, path: str, out: list[Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _leaves(item, f"{path}.{key}", out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _leaves(item, f"{path}[{i}]", out)
    else:
        out.append((path, value))


def _rebuild(value: Any, noisy: Iterator[Any]) -> Any:
    if isinstance(value, dict):
        return {key: _rebuild(item, noisy) for key, item in value.items()}
    if isinstance(value, list):
        return [_rebuild(item, noisy) for item in value]
    return next(noisy)


@functools.lru_cache(maxsize=256)
def _mechanism(integer: bool, sensitivity: float, epsilon: float) -> tuple[Any, Any, float]:
    """The OpenDP Laplace measurement of least scale within ``epsilon``, d_in, scale."""
    dp = _opendp()
    atom = dp.atom_domain(T="i64") if integer else dp.atom_domain(T=float, nan=False)
    metric = dp.l1_distance(T="i64" if integer else float)
    domain = dp.vector_domain(atom)
    d_in = int(sensitivity) if integer else float(sensitivity)

    def make(scale: float) -> Any:
        return dp.m.make_laplace(domain, metric, scale=scale)

    scale = float(dp.binary_search_param(make, d_in=d_in, d_out=epsilon, T=float))
    return make(scale), d_in, scale


def _release(payload: dict[str, Any], rule: Noise, epsilon: float) -> Release:
    leaves: list[tuple[str, Any]] = []
    for key in rule.keys:
        _leaves(payload[key], f"output.{key}", leaves)
    integer = rule.bounds is None
    values: list[int | float] = []
    for path, value in leaves:
        if integer and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"dp: {path} must be an integer count, not {value!r}")
        if not integer and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"dp: {path} must be a finite sum, not {value!r}")
        values.append(value if integer else float(value))
    if rule.bounds is None:
        sensitivity: float = rule.rows * count_sensitivity()
    else:
        (key,) = rule.keys
        entries = payload[key]
        if not isinstance(entries, dict) or set(entries) != set(rule.bounds):
            raise ValueError(f"dp: output.{key} must map exactly the declared names to sums")
        sensitivity = rule.rows * sum(sum_sensitivity(rule.bounds[name]) for name in entries)
    measurement, d_in, scale = _mechanism(integer, float(sensitivity), epsilon)
    noisy = iter(measurement(values) if values else [])
    for key in rule.keys:
        payload[key] = _rebuild(payload[key], noisy)
    return Release(
        keys=rule.keys,
        integer=integer,
        sensitivity=float(sensitivity),
        scale=scale,
        epsilon=float(measurement.map(d_in)),
    )


def privatize(
    output: dict[str, Any], rules: Sequence[DPRule], epsilon: float
) -> tuple[dict[str, Any], list[Release]]:
    """``output`` with calibrated noise on every :class:`Noise` key (module docstring)."""
    if type(output) is not dict:
        raise ValueError(f"dp: output must be a dict, not {type(output).__name__}")
    if not epsilon > 0:
        raise ValueError("dp: a run's ε must be positive")
    payload: dict[str, Any] = plain(output)
    declared: list[str] = []
    noise = [rule for rule in rules if isinstance(rule, Noise)]
    for rule in rules:
        if isinstance(rule, Noise):
            declared.extend(rule.keys)
        elif isinstance(rule, Public):
            declared.append(rule.key)
        else:
            raise ValueError(f"dp: unknown declaration {rule!r}")
    if len(set(declared)) != len(declared) or set(declared) != set(payload) or "dp" in payload:
        raise ValueError(
            f"dp: the output's keys {sorted(payload)} must each be declared once "
            f"(declared: {sorted(declared)}), and none may be 'dp'"
        )
    if not noise:
        raise ValueError("dp: an algorithm with a noisy variant declares some noise")
    part = epsilon / len(noise)
    releases = [_release(payload, rule, part) for rule in noise]
    return payload, releases
