"""Each score against a library (scipy, statsmodels) or a textbook value."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import statsmodels.api as sm

from tthf.engine.evaluation import array_scores


def _planted(rho: float, n_rows: int, n_names: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Forecast and realized standard normals with correlation ``rho`` in every row."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((n_rows, n_names))
    y = rho * f + math.sqrt(1 - rho**2) * rng.standard_normal((n_rows, n_names))
    return f, y


def test_planted_signal_gives_its_ic_and_the_textbook_rank_ic() -> None:
    """Bivariate normal with correlation rho: IC = rho, rank IC = (6/pi) asin(rho/2) (Pearson 1907)."""
    rho = 0.3
    f, y = _planted(rho, 200, 2000, seed=0)
    ic = array_scores.cross_sectional_ic(f, y)
    rank_ic = array_scores.cross_sectional_ic(f, y, rank=True)
    assert ic.mean() == pytest.approx(rho, abs=0.005)
    assert rank_ic.mean() == pytest.approx(6 / math.pi * math.asin(rho / 2), abs=0.005)
    assert rank_ic.mean() < ic.mean()  # 0.2876 < 0.3: the two are told apart


def test_cross_sectional_ic_matches_scipy_row_by_row_with_missing_cells() -> None:
    f, y = _planted(0.2, 30, 40, seed=1)
    rng = np.random.default_rng(2)
    f[rng.random(f.shape) < 0.2] = np.nan
    y[rng.random(y.shape) < 0.2] = np.nan
    f[3, :] = np.nan  # no forecast at all
    f[4, 2:] = np.nan  # two names left: below MIN_NAMES
    f[5, :] = 1.5  # constant forecast: undefined
    ic = array_scores.cross_sectional_ic(f, y)
    rank_ic = array_scores.cross_sectional_ic(f, y, rank=True)
    for t in range(len(f)):
        ok = np.isfinite(f[t]) & np.isfinite(y[t])
        if t in (3, 4, 5):
            assert math.isnan(ic[t]) and math.isnan(rank_ic[t])
            continue
        assert ic[t] == pytest.approx(scipy.stats.pearsonr(f[t, ok], y[t, ok]).statistic, abs=1e-12)
        assert rank_ic[t] == pytest.approx(scipy.stats.spearmanr(f[t, ok], y[t, ok]).statistic, abs=1e-12)


def test_pooled_correlations_match_scipy_with_ties() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 5, 300).astype(float)
    b = a + rng.integers(0, 3, 300)
    assert array_scores.pearson(a, b) == pytest.approx(scipy.stats.pearsonr(a, b).statistic, abs=1e-12)
    assert array_scores.spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)
    assert array_scores.spearman(np.array([1.0, 2.0, 3.0]), np.array([30.0, 20.0, 10.0])) == pytest.approx(-1.0)
    assert math.isnan(array_scores.spearman(np.array([1.0, 1.0]), np.array([1.0, 2.0])))


def test_hit_rate_leaves_out_zeros() -> None:
    y = np.array([0.01, -0.02, 0.03, 0.0, -0.01])
    f = np.array([0.5, 0.1, -0.2, 0.3, 0.0])
    assert array_scores.hit_rate(y, f) == pytest.approx(
        1 / 3
    )  # rows 0-2 count; 0 of the realized and of the forecast not
    assert math.isnan(array_scores.hit_rate(y, np.zeros(5)))


def test_decile_means_on_a_known_cross_section() -> None:
    f = np.tile(np.arange(20.0), (3, 1))
    y = 10 * f
    y[1] = -y[1]
    f[2, :15] = np.nan  # 5 names: fewer than 10 deciles
    table = array_scores.decile_means(f, y)
    np.testing.assert_allclose(table[0], 10 * (np.arange(10) * 2 + 0.5))
    np.testing.assert_allclose(table[1], -10 * (np.arange(10) * 2 + 0.5))
    assert np.isnan(table[2]).all()


def _overlapping(n: int, horizon: int, seed: int) -> np.ndarray:
    """A score series whose consecutive points share ``horizon - 1`` of ``horizon`` shocks."""
    e = np.random.default_rng(seed).standard_normal(n + horizon)
    return np.convolve(e, np.ones(horizon) / horizon, mode="valid")[:n]


def test_hac_errors_exceed_naive_ones_on_overlapping_labels() -> None:
    """A 60-step moving average has long-run variance ~60x its variance: se ratio ~ sqrt(60) = 7.7."""
    lags = array_scores.hac_lags(60)
    assert lags == 60
    overlapped = array_scores.mean_test(_overlapping(20_000, 60, seed=4), lags)
    assert 5.5 < overlapped["se_hac"] / overlapped["se_naive"] < 8.5
    assert abs(overlapped["t_hac"]) < abs(overlapped["t_naive"]) / 5
    iid = array_scores.mean_test(np.random.default_rng(5).standard_normal(20_000), lags)
    assert 0.85 < iid["se_hac"] / iid["se_naive"] < 1.15


def test_mean_test_is_the_textbook_newey_west() -> None:
    """se^2 = (g0 + 2 sum_j (1 - j/(L+1)) g_j) / n, g_j the lag-j autocovariance (Newey and West 1987)."""
    x = _overlapping(3000, 10, seed=6) + 0.05
    lags = 12
    d = x - x.mean()
    n = len(x)
    gamma = [d[j:] @ d[: n - j] / n for j in range(lags + 1)]
    var = gamma[0] + 2 * sum((1 - j / (lags + 1)) * gamma[j] for j in range(1, lags + 1))
    out = array_scores.mean_test(x, lags)
    assert out["se_hac"] == pytest.approx(math.sqrt(var / n), rel=1e-10)
    assert out["t_hac"] == pytest.approx(x.mean() / math.sqrt(var / n), rel=1e-10)
    assert out["t_naive"] == pytest.approx(scipy.stats.ttest_1samp(x, 0).statistic, rel=1e-10)
    assert out["icir"] == pytest.approx(x.mean() / x.std(ddof=1), rel=1e-12)
    assert array_scores.hac_lags(60, step=10) == 6


def test_qlike_textbook_values_and_zero_volatility() -> None:
    f = np.array([0.01, 0.01, 0.02])
    y = np.array([0.01, 0.02, 0.01])
    q = np.array([1.0, 4.0, 0.25])
    np.testing.assert_allclose(array_scores.qlike_terms(y, f, 1e-6), q - np.log(q) - 1, rtol=1e-12)
    assert array_scores.qlike(y[:1], f[:1], 1e-6) == 0.0
    # skfolio's form mean(log f^2 + y^2/f^2) is this one plus a constant in the forecast: the same ranking
    skfolio_form = np.mean(np.log(f**2) + y**2 / f**2)
    assert array_scores.qlike(y, f, 1e-6) == pytest.approx(skfolio_form - np.mean(np.log(y**2) + 1), rel=1e-12)
    # a realized volatility of 0 is scored at the floor: finite, and worse for a higher forecast
    zero = array_scores.qlike_terms(np.zeros(2), np.array([1e-3, 2e-3]), 1e-4)
    np.testing.assert_allclose(zero, [1e-2 - math.log(1e-2) - 1, 2.5e-3 - math.log(2.5e-3) - 1])
    assert array_scores.vol_log_error(np.array([0.0]), np.array([1e-3]), 1e-4)[0] == pytest.approx(math.log(10))


def test_mincer_zarnowitz_recovers_a_known_bias_and_tests_it() -> None:
    rng = np.random.default_rng(7)
    f = rng.lognormal(-6, 0.5, 20_000)
    biased = 2e-4 + 0.7 * f + rng.normal(0, 1e-4, f.size)
    mz = array_scores.mincer_zarnowitz(biased, f, lags=10)
    assert mz["intercept"] == pytest.approx(2e-4, abs=1e-5) and mz["slope"] == pytest.approx(0.7, abs=0.01)
    assert mz["wald_p"] < 1e-12
    ols = sm.OLS(biased, sm.add_constant(f)).fit()
    assert mz["r2"] == pytest.approx(ols.rsquared, rel=1e-12)
    unbiased = array_scores.mincer_zarnowitz(f + rng.normal(0, 1e-4, f.size), f, lags=10)
    assert unbiased["wald_p"] > 0.001 and unbiased["slope"] == pytest.approx(1.0, abs=0.02)
    exact = array_scores.mincer_zarnowitz(1e-3 + 2 * f, f, lags=1)
    assert exact["r2"] == pytest.approx(1.0) and exact["slope"] == pytest.approx(2.0)


def test_driscoll_kraay_errors_grow_with_a_common_shock() -> None:
    """Errors shared by every symbol in a minute: the panel (time) errors are larger than row-order HAC."""
    rng = np.random.default_rng(8)
    n_min, n_sym = 400, 50
    time = np.repeat(np.arange(n_min), n_sym)
    f = rng.lognormal(-6, 0.3, n_min * n_sym)
    y = f + np.repeat(rng.normal(0, 5e-4, n_min), n_sym) + rng.normal(0, 1e-4, f.size)
    rows = array_scores.mincer_zarnowitz(y, f, lags=2)
    panel = array_scores.mincer_zarnowitz(y, f, lags=2, time=time)
    assert panel["slope"] == rows["slope"]
    assert panel["se_intercept"] > 1.5 * rows["se_intercept"]  # 2.7e-5 vs 1.3e-5


def test_grouped_regression_matches_statsmodels_per_group() -> None:
    rng = np.random.default_rng(9)
    group = rng.integers(0, 4, 500)
    f = rng.normal(0, 1, 500)
    y = group + (1 + group) * f + rng.normal(0, 0.5, 500)
    group[group == 3] = 5  # group 3 empty, 4 empty too: NaN
    out = array_scores.grouped_regression(y, f, group, 6)
    for g in (0, 1, 2, 5):
        fit = sm.OLS(y[group == g], sm.add_constant(f[group == g])).fit()
        assert out["intercept"][g] == pytest.approx(fit.params[0], rel=1e-9)
        assert out["slope"][g] == pytest.approx(fit.params[1], rel=1e-9)
        assert out["r2"][g] == pytest.approx(fit.rsquared, rel=1e-9)
    assert np.isnan(out["slope"][[3, 4]]).all() and out["n"][3] == 0


def test_binned_means() -> None:
    f = np.arange(10.0)
    out = array_scores.binned_means(f, 2 * f, 5)
    assert out == {"forecast": [0.5, 2.5, 4.5, 6.5, 8.5], "realized": [1.0, 5.0, 9.0, 13.0, 17.0]}


def test_perfectly_calibrated_confidence_has_zero_coverage_gap() -> None:
    """In each decile of confidence c, exactly a share c of the errors is inside the band."""
    band, per_bin = 1.0, 1000
    conf, err = [], []
    for b in range(10):
        inside = 50 + 100 * b
        conf.append(np.full(per_bin, inside / per_bin))
        err.append(np.r_[np.zeros(inside), np.full(per_bin - inside, 2 * band)])
    conf, err = np.concatenate(conf), np.concatenate(err)
    bins = array_scores.confidence_bins(conf, err, band, 10)
    gap = array_scores.coverage_gap(conf, err, band, bins)
    assert [b["coverage"] for b in bins] == pytest.approx([b["mean_conf"] for b in bins], abs=1e-12)
    assert gap["overall_pp"] == pytest.approx(0, abs=1e-9)
    assert gap["mean_abs_pp"] == pytest.approx(0, abs=1e-9) and gap["max_abs_pp"] == pytest.approx(0, abs=1e-9)


def test_random_calibrated_confidence_is_within_sampling_noise_and_overconfidence_is_measured() -> None:
    rng = np.random.default_rng(10)
    n, band = 200_000, 1.0
    conf = rng.uniform(0.05, 0.95, n)
    err = np.where(rng.random(n) < conf, 0.5 * band, 2 * band)
    gap = array_scores.coverage_gap(conf, err, band, array_scores.confidence_bins(conf, err, band, 10))
    assert abs(gap["overall_pp"]) < 0.5 and gap["mean_abs_pp"] < 0.6 and gap["max_abs_pp"] < 1.2
    stated = np.full(n, 0.8)
    over = np.where(rng.random(n) < 0.6, 0.5 * band, 2 * band)
    gap = array_scores.coverage_gap(stated, over, band, array_scores.confidence_bins(stated, over, band, 10))
    assert gap["overall_pp"] == pytest.approx(-20, abs=0.5) and gap["mean_abs_pp"] == pytest.approx(20, abs=0.5)


def test_risk_coverage_known_curve_and_its_bounds() -> None:
    err = np.array([4.0, 3.0, 2.0, 1.0])
    out = array_scores.risk_coverage(np.array([0.1, 0.2, 0.3, 0.4]), err, n_points=4)
    assert out["coverage"] == [0.25, 0.5, 0.75, 1.0]
    assert out["mean_abs_err_at"] == [1.0, 1.5, 2.0, 2.5]
    assert out["aurc"] == pytest.approx(1.75) and out["aurc_oracle"] == pytest.approx(1.75)
    worst = array_scores.risk_coverage(np.array([0.4, 0.3, 0.2, 0.1]), err, n_points=4)
    assert worst["mean_abs_err_at"] == [4.0, 3.5, 3.0, 2.5] and worst["aurc"] == pytest.approx(3.25)
    rng = np.random.default_rng(11)
    e = rng.exponential(1.0, 100_000)
    blind = array_scores.risk_coverage(rng.random(e.size), e)
    assert blind["aurc"] == pytest.approx(blind["mean_abs_err"], rel=0.02)


def test_confidence_summary_says_higher_confidence_means_smaller_errors() -> None:
    """Errors drawn with the stated sigma: ranking negative, error falls by decile, calibrated."""
    rng = np.random.default_rng(12)
    n, band = 100_000, 1e-3
    sigma = rng.uniform(2e-4, 4e-3, n)
    err = np.abs(rng.normal(0, sigma))
    conf = np.array([math.erf(band / (s * math.sqrt(2))) for s in sigma])
    out = array_scores.confidence_summary(conf, err, band, 10)
    assert out["spearman_conf_vs_abs_err"] < -0.3
    errs = [b["mean_abs_err"] for b in out["bins"]]
    assert errs == sorted(errs, reverse=True)
    assert out["max_calibration_gap"] < 0.015
