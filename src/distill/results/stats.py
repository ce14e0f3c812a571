"""The statistics of paired differences (scipy): per cell the paired t-test, and across cells the
pooled estimate with its heterogeneity (inverse-variance weights; Cochran's Q, I², DerSimonian-Laird)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

#: the power and the two-sided level the smallest detectable difference is stated at
POWER, ALPHA = 0.8, 0.05


def paired_t(difference: pd.Series, se: pd.Series, n: pd.Series) -> pd.DataFrame:
    """Per row, from the mean paired difference, its standard error and the number of pairs:
    ``ci_low``/``ci_high`` (95%), ``p_value`` (two-sided paired t-test, n - 1 degrees of freedom)
    and ``detectable``: the smallest true difference this many pairs with this spread detect with
    80% power, (t_{0.975} + t_{0.8}) x SE. NaN where n < 2."""
    df = (n.astype(float) - 1).where(n >= 2)
    d, se = difference.astype(float), se.astype(float)
    t_crit = stats.t.ppf(1 - ALPHA / 2, df)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * stats.t.sf(np.abs(d / se), df)
    return pd.DataFrame({"ci_low": d - t_crit * se, "ci_high": d + t_crit * se, "p_value": p,
                         "detectable": (t_crit + stats.t.ppf(POWER, df)) * se}, index=difference.index)


def pooled(difference: pd.Series, se: pd.Series) -> dict[str, float]:
    """The cells' mean differences pooled by inverse variance: the fixed-effect ``estimate`` (its
    ``se``, 95% interval and p-value), heterogeneity (Cochran's ``q`` on ``k - 1`` degrees of freedom,
    its ``q_p``, ``i2``), and the DerSimonian-Laird random-effects estimate (``tau2``, ``re_estimate``,
    ``re_se``, ``re_ci_low``/``re_ci_high``, ``re_p``): what a reader should quote where the cells disagree."""
    keep = se.notna() & (se > 0) & difference.notna()
    d, v = difference[keep].astype(float).to_numpy(), se[keep].astype(float).to_numpy() ** 2
    k = len(d)
    if k == 0:
        return {"k": 0}
    w = 1 / v
    estimate = float(np.sum(w * d) / np.sum(w))
    q = float(np.sum(w * (d - estimate) ** 2))
    tau2 = max(0.0, (q - (k - 1)) / (np.sum(w) - np.sum(w**2) / np.sum(w))) if k > 1 else 0.0
    w_re = 1 / (v + tau2)
    re_estimate = float(np.sum(w_re * d) / np.sum(w_re))
    z = stats.norm.ppf(1 - ALPHA / 2)
    out = {"k": k, "estimate": estimate, "se": math.sqrt(1 / np.sum(w)), "q": q,
           "q_p": float(stats.chi2.sf(q, k - 1)) if k > 1 else math.nan,
           "i2": max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0, "tau2": tau2,
           "re_estimate": re_estimate, "re_se": math.sqrt(1 / np.sum(w_re))}
    for prefix in ("", "re_"):
        mean, err = out[f"{prefix}estimate"], out[f"{prefix}se"]
        out[f"{prefix}ci_low"], out[f"{prefix}ci_high"] = mean - z * err, mean + z * err
        out[f"{prefix}p"] = float(2 * stats.norm.sf(abs(mean / err)))
    return out
