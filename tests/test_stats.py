"""Seed statistics against hand computation: Student's t quantiles from the table."""

import math

import pytest

from pose_vq import stats


def test_summary_is_the_t_interval_of_the_mean():
    s = stats.summary([1.0, 2.0, 6.0])
    # mean 3, sample std sqrt(7), t(0.975, 2 dof) = 4.3027 (any t table)
    half = 4.302653 * math.sqrt(7.0) / math.sqrt(3.0)
    assert s["n"] == 3 and s["mean"] == pytest.approx(3.0)
    assert s["std"] == pytest.approx(math.sqrt(7.0))
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((3.0 - half, 3.0 + half), rel=1e-6)
    one = stats.summary([4.0])
    assert one["mean"] == 4.0 and math.isnan(one["std"]) and math.isnan(one["ci_low"])
    with pytest.raises(ValueError, match="no values"):
        stats.summary([])


def test_paired_difference_uses_the_shared_seeds_only():
    a = {0: 10.0, 1: 12.0, 2: 11.0, 5: 99.0}
    b = {0: 9.0, 1: 10.0, 2: 10.5, 7: -99.0}
    d = stats.paired_difference(a, b)  # differences 1, 2, 0.5
    assert d["n"] == 3 and d["mean"] == pytest.approx(3.5 / 3)
    half = 4.302653 * math.sqrt(((1 - 3.5 / 3) ** 2 + (2 - 3.5 / 3) ** 2 + (0.5 - 3.5 / 3) ** 2)
                                / 2) / math.sqrt(3)
    assert d["ci_high"] - d["mean"] == pytest.approx(half, rel=1e-6)
    with pytest.raises(ValueError, match="share no seed"):
        stats.paired_difference({0: 1.0}, {1: 1.0})
