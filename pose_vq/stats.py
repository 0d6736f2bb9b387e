"""Numbers over seeds: the mean, the spread and a Student-t confidence interval of one
arm's runs, and the paired difference of two arms run at the same seeds (what a claim
that one beats the other rests on)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats


def summary(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """n, mean, standard deviation (ddof 1) and the ``confidence`` interval of the mean
    (mean -+ t * std / sqrt(n), t of n - 1 degrees of freedom); with one value the
    spread and interval are NaN: one run says nothing about its spread."""
    x = np.asarray(values, np.float64)
    n = len(x)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = float(x.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    std = float(x.std(ddof=1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def paired_difference(a: Mapping[int, float], b: Mapping[int, float],
                      confidence: float = 0.95) -> dict[str, float]:
    """``summary`` of a[seed] - b[seed] over the seeds both arms have: the paired test of
    "a differs from b" (its interval excludes 0 when it does at that confidence)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("the two arms share no seed")
    return summary([a[s] - b[s] for s in seeds], confidence)
