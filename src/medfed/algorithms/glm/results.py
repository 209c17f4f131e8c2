"""The typed result of ``glm``: coefficients and fit statistics, a summary table, a forest plot.

Built on the hub from pooled sums (:mod:`.fit`); nothing here runs on a node or leaves one
(what the nodes send per round, and the gate rules, are in :mod:`.local` and :mod:`.irls`).
The SDK validates a finished task's result as :class:`GLMResult`; :meth:`GLMResult.summary`
prints a table like statsmodels' ``GLMResults.summary()`` and :meth:`GLMResult.plot` saves a
forest plot of the coefficients (without the intercept) with their 95 % intervals, the
numbers beside each bar.
"""

from __future__ import annotations

from pydantic import BaseModel

from medfed.algorithms.plotting import numbers_beside, pyplot, save

__all__ = ["Coefficient", "GLMResult"]


class Coefficient(BaseModel):
    """One coefficient: estimate, standard error, z, two-sided p value, 95 % interval."""

    name: str
    estimate: float
    std_error: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float


class GLMResult(BaseModel):
    """A GLM fitted by federated IRLS; the figures equal statsmodels' on the pooled rows.

    ``n`` is the number of observations: the row count, or with ``freq_weights`` the sum
    of the frequency weights (statsmodels' ``model.wnobs``), as ``df_resid = n - p``.
    """

    outcome: str
    family: str
    link: str
    coefficients: list[Coefficient]
    reference_levels: dict[str, str]
    n: int
    df_model: int
    df_resid: int
    scale: float
    deviance: float
    null_deviance: float
    pearson_chi2: float
    log_likelihood: float
    aic: float
    iterations: int
    converged: bool
    datasets: int

    def coefficient(self, name: str) -> Coefficient:
        """The coefficient called ``name`` (``KeyError`` when there is none)."""
        for coefficient in self.coefficients:
            if coefficient.name == name:
                return coefficient
        raise KeyError(name)

    def summary(self) -> str:
        """A text table in the manner of statsmodels' GLM summary."""
        left = [
            ("Dep. Variable:", self.outcome),
            ("Model:", "GLM"),
            ("Model Family:", self.family.capitalize()),
            ("Link Function:", self.link.capitalize()),
            ("Method:", "federated IRLS"),
            ("No. Iterations:", str(self.iterations)),
            ("Datasets:", str(self.datasets)),
        ]
        right = [
            ("No. Observations:", str(self.n)),
            ("Df Residuals:", str(self.df_resid)),
            ("Df Model:", str(self.df_model)),
            ("Scale:", f"{self.scale:.4g}"),
            ("Log-Likelihood:", f"{self.log_likelihood:.5g}"),
            ("Deviance:", f"{self.deviance:.5g}"),
            ("Null deviance:", f"{self.null_deviance:.5g}"),
            ("Pearson chi2:", f"{self.pearson_chi2:.4g}"),
            ("AIC:", f"{self.aic:.5g}"),
        ]
        width = max([12, *(len(c.name) for c in self.coefficients)])
        total = width + 66
        lines = ["Generalized Linear Model Regression Results".center(total).rstrip(), "=" * total]
        for i in range(max(len(left), len(right))):
            a = left[i] if i < len(left) else ("", "")
            b = right[i] if i < len(right) else ("", "")
            lines.append(f"{a[0]:<16}{a[1]:>22}   {b[0]:<18}{b[1]:>19}".rstrip())
        lines.append("=" * total)
        header = ("coef", "std err", "z", "P>|z|", "[0.025", "0.975]")
        lines.append(" " * width + "".join(f"{h:>11}" for h in header))
        lines.append("-" * total)
        for c in self.coefficients:
            values = f"{c.estimate:>11.4f}{c.std_error:>11.3f}{c.z:>11.3f}{c.p_value:>11.3f}"
            lines.append(f"{c.name:<{width}}{values}{c.ci_low:>11.3f}{c.ci_high:>11.3f}")
        lines.append("=" * total)
        if self.reference_levels:
            refs = ", ".join(f"{k} = {v}" for k, v in self.reference_levels.items())
            lines.append(f"Reference levels: {refs}")
        return "\n".join(lines)

    def plot(self, path: str) -> None:
        """Save a forest plot (PNG) of the coefficients without the intercept."""
        plt = pyplot()

        shown = [c for c in self.coefficients if c.name != "Intercept"] or self.coefficients
        labels = {"binomial": "log odds ratio", "poisson": "log rate ratio"}
        fig, ax = plt.subplots(figsize=(7.0, 1.0 + 0.4 * len(shown)))
        ys = list(range(len(shown)))[::-1]
        estimates = [c.estimate for c in shown]
        low = [c.estimate - c.ci_low for c in shown]
        high = [c.ci_high - c.estimate for c in shown]
        ax.errorbar(estimates, ys, xerr=[low, high], fmt="s", color="black", capsize=3)
        ax.axvline(0.0, color="grey", linestyle="--", linewidth=1)
        ax.set_yticks(ys)
        ax.set_yticklabels([c.name for c in shown])
        numbers_beside(
            ax, ys, [f"{c.estimate:.3g} [{c.ci_low:.3g}, {c.ci_high:.3g}]" for c in shown]
        )
        ax.set_xlabel(f"{labels.get(self.family, 'coefficient')} (95 % CI)")
        ax.set_title(f"GLM ({self.family}, {self.link}) of {self.outcome}, n = {self.n}")
        save(fig, path)
