"""The typed result of ``validation`` (what the hub stores and the SDK returns).

``overall`` and each subgroup level carry the same summary: ``n``, class counts, the AUC
with its binning bounds and DeLong-style interval, the Brier score, per threshold the
confusion counts with sensitivity, specificity, PPV and NPV (Wilson and Clopper-Pearson
intervals), calibration bins and ROC points. ``sites`` holds each dataset's own summary
where that site shares it. The calibration intercept and slope come from the federated
GLM of the outcome on ``logit(score)``; ``recalibration`` is the derived model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["ValidationResult"]


class ValidationResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_sha256: str
    study_id: int | None
    mode: Literal["private", "shared"]
    overall: dict[str, Any]
    subgroups: dict[str, Any]
    sites: list[dict[str, Any]]
    contributing: list[int]
    calibration_intercept: dict[str, Any]
    calibration_slope: dict[str, Any]
    recalibration: dict[str, Any]

    def summary(self) -> str:
        o = self.overall
        lines = [f"model {self.model_sha256[:12]}…  n={o['n']} (events {o['n_pos']})"]
        if o["auc"] is not None:
            a = o["auc"]
            lines.append(
                f"AUC {a['estimate']:.4f} [{a['ci'][0]:.4f}, {a['ci'][1]:.4f}] "
                f"(binning bound {a['lower_bound']:.4f}-{a['upper_bound']:.4f})"
            )
        lines.append(f"Brier {o['brier']:.4f}")
        lines.append(
            f"calibration intercept {self.calibration_intercept['estimate']:.4f}, "
            f"slope {self.calibration_slope['estimate']:.4f}"
        )
        for t in o["thresholds"]:
            lines.append(
                f"threshold {t['threshold']:g}: sensitivity {t['sensitivity']['value']}, "
                f"specificity {t['specificity']['value']}"
            )
        return "\n".join(lines)
