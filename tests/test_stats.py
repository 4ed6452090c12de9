"""Known values for the intervals, the pass@k estimator and the paired tests."""

from __future__ import annotations

import math

import pytest

from ssb.report import stats


def test_wilson_known_values():
    lo, hi = stats.wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert stats.wilson(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert stats.wilson(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)
    lo, hi = stats.wilson(40, 100)  # the "40% [31, 50] (n=100)"
    assert lo == pytest.approx(0.3094, abs=1e-4) and hi == pytest.approx(0.4980, abs=1e-4)
    assert stats.wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        stats.wilson(3, 2)


def test_pass_at_k_hand_computed():
    assert stats.pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert stats.pass_at_k(10, 1, 5) == pytest.approx(0.5)  # 1 - C(9,5)/C(10,5) = 1 - 126/252
    assert stats.pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 = c/n
    assert stats.pass_at_k(4, 0, 4) == 0.0
    assert stats.pass_at_k(4, 1, 4) == 1.0
    assert stats.pass_at_k(4, 3, 2) == 1.0  # n - c < k
    for n, c, k in [(7, 3, 2), (20, 5, 4), (16, 0, 3), (9, 9, 9)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert stats.pass_at_k(n, c, k) == pytest.approx(exact)
    assert stats.mean_pass_at_k([(5, 2, ), (5, 0)], 2) == pytest.approx(0.35)
    with pytest.raises(ValueError):
        stats.pass_at_k(4, 1, 5)


def test_mcnemar_exact_known_values():
    assert stats.mcnemar_exact(1, 9) == pytest.approx(0.02148, abs=1e-5)  # 2 * 11/1024
    assert stats.mcnemar_exact(9, 1) == stats.mcnemar_exact(1, 9)
    assert stats.mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert stats.mcnemar_exact(5, 5) == 1.0
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(3, 12) == pytest.approx(2 * sum(math.comb(15, i) for i in range(4)) / 2**15)


def test_square_and_add_matches_newcombe_1998_unpaired_example():
    # Newcombe (1998) independent-samples example: 56/70 vs 48/80 -> 0.2000 [0.0524, 0.3339]
    d, lo, hi = stats.square_and_add(56 / 70, stats.wilson(56, 70), 48 / 80, stats.wilson(48, 80))
    assert d == pytest.approx(0.2)
    assert lo == pytest.approx(0.0524, abs=1e-4) and hi == pytest.approx(0.3339, abs=1e-4)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        # Newcombe (1998) "Improved confidence intervals for the difference between binomial
        # proportions based on paired data", Stat Med 17:2635-2650, method-10 limits of the
        # paper's worked examples, table (e, f, g, h) = (a, b, c, d):
        ((36, 12, 2, 0), (0.2, 0.0569, 0.3404)),
        ((18, 12, 2, 18), (0.2, 0.0562, 0.3290)),  # uncorrected phi gives [0.0618, 0.3239]
        ((53, 0, 0, 1), (0.0, -0.0729, 0.0729)),  # uncorrected phi gives [-0.0640, 0.0640]
        ((0, 30, 0, 0), (1.0, 0.8395, 1.0)),
        # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" ch. 8, Cavo
        # et al. (2012) complete response before/after consolidation, (59, 6, 16, 80): Newcombe
        # square-and-add -0.0621 (-0.1186 to -0.0046), as printed by their R package
        # contingencytables (tests/testthat chapter 8); uncorrected phi gives [-0.1174, -0.0059]
        ((59, 6, 16, 80), (-0.0621, -0.1186, -0.0046)),
    ],
)
def test_newcombe_paired_matches_published_examples(table, expected):
    d, lo, hi = stats.newcombe_paired(*table)
    assert d == pytest.approx(expected[0], abs=1e-4)
    assert lo == pytest.approx(expected[1], abs=1e-4) and hi == pytest.approx(expected[2], abs=1e-4)


def test_newcombe_paired_uses_continuity_corrected_phi():
    # the table: with phi corrected as in the method the interval reaches below 0
    # (not significant, like exact McNemar on 12 vs 4: p = 0.077); the uncorrected phi
    # gave [+0.0007, +0.0806]
    d, lo, hi = stats.newcombe_paired(150, 12, 4, 34)
    assert d == pytest.approx(0.04)
    assert lo == pytest.approx(-0.0005, abs=1e-4) and hi == pytest.approx(0.0817, abs=1e-4)
    assert lo < 0 < hi and stats.mcnemar_exact(12, 4) > 0.05
    # 0 <= a*d - b*c <= n/2 sets phi to 0: the interval equals the independent-samples one
    # (uncorrected, phi would be 1/35 here)
    _, lo, hi = stats.newcombe_paired(3, 4, 2, 3)  # a*d - b*c = 1 <= n/2 = 6
    _, ilo, ihi = stats.square_and_add(7 / 12, stats.wilson(7, 12), 5 / 12, stats.wilson(5, 12))
    assert (lo, hi) == (pytest.approx(ilo), pytest.approx(ihi))
    # a*d - b*c = 25 > n/2 = 12.5 keeps a positive phi: narrower than independent samples
    _, lo, hi = stats.newcombe_paired(5, 5, 5, 10)
    _, ilo, ihi = stats.square_and_add(10 / 25, stats.wilson(10, 25), 10 / 25, stats.wilson(10, 25))
    assert hi - lo < ihi - ilo


def test_paired_diff_table_and_interval():
    x = [1] * 30 + [1] * 9 + [0] * 1 + [0] * 60  # 30 both, 9 x-only, 1 y-only, 60 neither
    y = [1] * 30 + [0] * 9 + [1] * 1 + [0] * 60
    r = stats.paired_diff(x, y)
    assert (r["n"], r["x_only"], r["y_only"]) == (100, 9, 1)
    assert r["diff"] == pytest.approx(0.08)
    assert r["p_value"] == pytest.approx(0.02148, abs=1e-5)
    lo, hi = r["ci"]
    assert lo < 0.08 < hi and lo > 0  # significant: the interval excludes 0 like McNemar
    # positive correlation between the two models narrows the interval vs. independence
    _, ilo, ihi = stats.square_and_add(0.39, stats.wilson(39, 100), 0.31, stats.wilson(31, 100))
    assert hi - lo < ihi - ilo
    # swapping the models mirrors the interval
    s = stats.paired_diff(y, x)
    assert s["diff"] == pytest.approx(-0.08)
    assert s["ci"][0] == pytest.approx(-hi) and s["ci"][1] == pytest.approx(-lo)
    # identical vectors: difference 0, p = 1
    same = stats.paired_diff(x, x)
    assert same["diff"] == 0 and same["p_value"] == 1.0 and same["ci"][0] <= 0 <= same["ci"][1]
    with pytest.raises(ValueError):
        stats.paired_diff([1, 0], [1])


def test_paired_bootstrap_seeded_and_sensible():
    x = [1.0, 0.75, 0.5, 1.0, 0.25, 1.0, 0.5, 0.75] * 5
    y = [0.5, 0.75, 0.25, 0.5, 0.0, 1.0, 0.5, 0.25] * 5
    a = stats.paired_bootstrap(x, y, iters=2000, seed=1)
    b = stats.paired_bootstrap(x, y, iters=2000, seed=1)
    assert a == b
    assert a["diff"] == pytest.approx(0.25)
    assert a["ci"][0] < 0.25 < a["ci"][1] and a["ci"][0] > 0
    assert a["p_value"] < 0.01
    null = stats.paired_bootstrap(x, x, iters=500)
    assert null["diff"] == 0 and null["p_value"] == 1.0


def test_reading_of_a_difference_interval():
    # above / below where the interval excludes zero on that side; level where it holds zero (its ends included)
    cis = ([0.01, 0.2], [-0.3, -0.001], [-0.1, 0.1], [0.0, 0.2], [-0.2, 0.0])
    assert [stats.reading(ci) for ci in cis] == ["above", "below", "level", "level", "level"]


def test_length_stats():
    s = stats.length_stats([10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    assert s["mean"] == 55 and s["median"] == 55 and s["p90"] == pytest.approx(91) and s["max"] == 100
    assert stats.length_stats([])["mean"] is None


def test_holm_adjusts_a_family_of_p_values_in_their_order():
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1 -> 0.03, 0.06, 0.04 -> made non-decreasing: 0.06 for the last
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0] and stats.holm([0.02]) == [0.02] and stats.holm([]) == []
    # a run's three comparisons (ssb − base, grpo − base, ssb − grpo): the smallest p, 0.035, is 0.105 adjusted
    assert stats.holm([0.035, 0.5, 0.2]) == pytest.approx([0.105, 0.5, 0.4])


def test_paired_rows_carry_holm_p_values_per_benchmark():
    from ssb.report.paired import paired_table

    def recs(n_right, n=60):
        return [{"id": i, "correct": [i < n_right]} for i in range(n)]

    rows = paired_table({"base": {"b1": recs(20), "b2": recs(20)}, "grpo": {"b1": recs(30)}, "ssb": {"b1": recs(35)}})
    b1 = [r for r in rows if r["bench"] == "b1"]
    assert len(b1) == 3 and not [r for r in rows if r["bench"] == "b2"]  # b2: base alone, nothing to pair
    assert [r["p_holm"] for r in b1] == pytest.approx(stats.holm([r["p_value"] for r in b1]))
    assert all(r["p_holm"] >= r["p_value"] for r in b1)


def test_two_way_bootstrap_counts_run_to_run_variance_by_hand():
    """Model a: replicate 0 right on every problem, replicate 1 wrong on every one; b always wrong. A problem
    resample cannot move either (each replicate's accuracy is 1 or 0 whatever problems are drawn), so the
    problems-only interval of a - b is [0.5, 0.5]; drawing the 2 replicates with replacement gives a - b = 1
    (both draws replicate 0, p = 1/4), 0.5 (p = 1/2) or 0 (p = 1/4): its 95% interval is [0, 1]."""
    a = [[True] * 20, [False] * 20]
    b = [[False] * 20, [False] * 20]
    res = stats.bootstrap_pooled({"a": a, "b": b}, [("a", "b")], iters=2000, seed=1)
    d = res["diffs"][("a", "b")]
    assert d["value"] == 0.5 and d["ci_problems"] == [0.5, 0.5] and d["ci"] == [0.0, 1.0]
    assert res["models"]["b"]["ci"] == res["models"]["b"]["ci_problems"] == [0.0, 0.0]
    # one replicate: nothing to draw, the two intervals agree
    one = stats.bootstrap_pooled({"a": [[True, False] * 10], "b": [[False] * 20]}, [("a", "b")], iters=500)
    assert one["diffs"][("a", "b")]["ci"] == one["diffs"][("a", "b")]["ci_problems"]


def test_two_way_bootstrap_agrees_with_an_independent_implementation():
    """The same two-way bootstrap written independently with numpy's generator (other draws): the interval
    ends agree within sampling error, and the two-way interval is wider than the problems-only one when
    replicates differ."""
    import numpy as np

    rng = np.random.default_rng(7)
    n, reps = 300, 3
    base = rng.random(n) < 0.3
    arm = np.stack([rng.random(n) < p for p in (0.30, 0.42, 0.36)])  # replicates far apart
    ours = stats.bootstrap_pooled({"arm": [list(map(bool, r)) for r in arm], "base": [list(map(bool, base))] * reps},
                                  [("arm", "base")], iters=4000, seed=3)["diffs"][("arm", "base")]
    diffs = []
    gen = np.random.default_rng(11)
    for _ in range(20000):
        idx = gen.integers(0, n, n)
        rep = gen.integers(0, reps, reps)
        diffs.append(arm[rep][:, idx].mean() - base[idx].mean())
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    assert abs(ours["ci"][0] - lo) < 0.01 and abs(ours["ci"][1] - hi) < 0.01
    assert ours["ci"][1] - ours["ci"][0] > 1.5 * (ours["ci_problems"][1] - ours["ci_problems"][0])

