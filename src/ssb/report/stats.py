"""Small, dependency-free statistics for honest benchmark numbers.

* :func:`wilson` — Wilson score interval for one proportion (95% by default).
* :func:`pass_at_k` — the unbiased pass@k estimator of Chen et al. (2021):
  ``1 - C(n-c, k) / C(n, k)`` for ``n`` samples of which ``c`` are correct.
* :func:`mcnemar_exact` — exact McNemar test: two-sided binomial test on the
  discordant pairs (``b`` won by A only, ``c`` won by B only) with p = 1/2.
* :func:`paired_diff` — difference of two paired proportions with Newcombe's (1998,
  Stat Med 17:2635-2650) "method 10" interval: Wilson score limits of both margins
  combined by square-and-add with the continuity-corrected phi correlation of the
  2x2 table (the variant of that paper and of Fagerland, Lydersen & Laake's
  reference implementation); deterministic, good coverage at small n.
* :func:`reading` — what a difference's interval says: above zero, below zero or level (it holds zero).
* :func:`holm` — Holm's (1979) step-down adjustment of a family of p-values (several comparisons
  of one run's models on one benchmark: a raw p below 0.05 is no longer a 5% chance of a false finding).
* :func:`paired_bootstrap` — seeded paired bootstrap of a mean difference, for
  per-problem scores that are not 0/1 (mean accuracy over n sampled completions),
  with a sign-flip permutation p-value.
* :func:`length_stats` — mean, median, p90, max of completion lengths.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

Z95 = 1.959963984540054  # two-sided 95% normal quantile


# ----------------------------------------------------------------------------- one proportion


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` (``(0, 1)`` when n = 0)."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson: need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # clamp tiny float excursions; at k=0 / k=n the limit is exactly 0 / 1
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return (low, high)


# ----------------------------------------------------------------------------- pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples with ``c`` correct: ``1 - C(n-c,k)/C(n,k)``.

    Computed as the product ``prod_{i=n-c+1}^{n} (1 - k/i)`` (numerically stable)."""
    if not (0 <= c <= n):
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not (1 <= k <= n):
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """Mean pass@k over problems given ``(n, c)`` per problem."""
    if not counts:
        return float("nan")
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)


# ----------------------------------------------------------------------------- paired tests


def binom_cdf(x: int, n: int, p: float = 0.5) -> float:
    """P(X <= x) for X ~ Binomial(n, p), exact with integer binomials."""
    if x < 0:
        return 0.0
    if x >= n:
        return 1.0
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(x + 1))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs.

    ``min(1, 2 * P(X <= min(b, c)))`` with X ~ Binomial(b + c, 1/2); 1.0 when b = c = 0."""
    if b < 0 or c < 0:
        raise ValueError(f"mcnemar_exact: counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binom_cdf(min(b, c), n, 0.5))


def discordant_counts(x: Sequence[bool], y: Sequence[bool]) -> tuple[int, int, int, int]:
    """2x2 counts ``(both, x_only, y_only, neither)`` of two paired 0/1 vectors."""
    if len(x) != len(y):
        raise ValueError(f"paired vectors differ in length: {len(x)} vs {len(y)}")
    a = b = c = d = 0
    for xi, yi in zip(x, y):
        if xi and yi:
            a += 1
        elif xi:
            b += 1
        elif yi:
            c += 1
        else:
            d += 1
    return a, b, c, d


def newcombe_paired(a: int, b: int, c: int, d: int, z: float = Z95) -> tuple[float, float, float]:
    """Difference ``p1 - p2`` of paired proportions and Newcombe's method-10 interval.

    ``a`` both correct, ``b`` only the first, ``c`` only the second, ``d`` neither;
    p1 = (a+b)/n, p2 = (a+c)/n. Returns ``(diff, low, high)``; ``(0, -1, 1)`` when n = 0.

    The Wilson intervals of p1 and p2 are combined by :func:`square_and_add` with the
    continuity-corrected phi of Newcombe (1998, Stat Med 17:2635-2650): ``cross =
    a*d - b*c`` becomes ``cross - n/2`` if ``cross > n/2`` and 0 if ``0 <= cross <= n/2``
    (a negative ``cross`` is kept); ``phi = cross / sqrt((a+b)(c+d)(a+c)(b+d))``, or 0
    when any of those four margins is 0."""
    n = a + b + c + d
    if n == 0:
        return (0.0, -1.0, 1.0)
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, z)
    l2, u2 = wilson(a + c, n, z)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c  # Newcombe's continuity correction of phi's numerator
    if cross > n / 2:
        cross -= n / 2
    elif cross >= 0:
        cross = 0
    phi = cross / math.sqrt(margins) if margins > 0 else 0.0
    return square_and_add(p1, (l1, u1), p2, (l2, u2), phi)


def square_and_add(p1: float, ci1: tuple[float, float], p2: float, ci2: tuple[float, float],
                   phi: float = 0.0) -> tuple[float, float, float]:
    """Newcombe's square-and-add combination of two Wilson intervals into an interval for
    ``p1 - p2``; ``phi`` is their correlation (0 for independent samples). Returns
    ``(p1 - p2, low, high)`` with the limits clipped to [-1, 1]."""
    (l1, u1), (l2, u2) = ci1, ci2
    diff = p1 - p2
    dl = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    du = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return (diff, max(-1.0, diff - dl), min(1.0, diff + du))


def paired_diff(x: Sequence[bool], y: Sequence[bool]) -> dict:
    """Paired comparison of two 0/1 vectors over the same problems (x minus y).

    Returns ``n``, ``diff``, ``ci`` (Newcombe method 10, see :func:`newcombe_paired`),
    ``ci_method``, ``p_value`` (exact McNemar, see :func:`mcnemar_exact`), ``test`` and
    the discordant counts ``x_only`` / ``y_only``."""
    a, b, c, d = discordant_counts(x, y)
    diff, lo, hi = newcombe_paired(a, b, c, d)
    return {
        "n": a + b + c + d,
        "diff": diff,
        "ci": [lo, hi],
        "ci_method": "newcombe-paired",
        "p_value": mcnemar_exact(b, c),
        "test": "mcnemar-exact",
        "x_only": b,
        "y_only": c,
    }


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values of a family of tests, in the order given: the i-th smallest p times
    (m - i) (i from 0), made non-decreasing in that order, capped at 1. Rejecting where the adjusted
    p < alpha holds the family-wise error rate at alpha (Holm 1979, Scand J Stat 6:65-70)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def reading(ci: Sequence[float]) -> str:
    """What a difference's interval says: ``above`` (it lies above zero), ``below`` (below zero) or
    ``level`` (it holds zero: not significant at the interval's level). The one reading of a
    difference that compare's verdict, the task suite, the rounds and the quality benchmark use."""
    lo, hi = ci
    return "above" if lo > 0 else "below" if hi < 0 else "level"


def paired_bootstrap(
    x: Sequence[float], y: Sequence[float], iters: int = 10000, seed: int = 0, alpha: float = 0.05
) -> dict:
    """Paired bootstrap interval of ``mean(x) - mean(y)`` (percentile method, resampling
    problems) and a two-sided sign-flip permutation p-value; both seeded."""
    if len(x) != len(y):
        raise ValueError(f"paired vectors differ in length: {len(x)} vs {len(y)}")
    n = len(x)
    if n == 0:
        return {"n": 0, "diff": 0.0, "ci": [-1.0, 1.0], "ci_method": "paired-bootstrap",
                "p_value": 1.0, "test": "sign-flip-permutation"}
    import numpy as np  # lazy: ~0.2 s, only for paired tests; compare/evaluate import stats without it

    deltas = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    diff = float(deltas.mean())
    rng = np.random.default_rng(seed)
    block = max(1, min(iters, 2_000_000 // n))  # bound memory: ~16 MB of indices per block
    means, extreme = [], 0
    for start in range(0, iters, block):
        m = min(block, iters - start)
        means.append(deltas[rng.integers(0, n, size=(m, n))].mean(axis=1))
        signs = rng.choice(np.array([-1.0, 1.0]), size=(m, n))
        extreme += int((np.abs((signs * deltas).mean(axis=1)) >= abs(diff) - 1e-12).sum())
    lo, hi = (float(v) for v in np.quantile(np.concatenate(means), [alpha / 2, 1 - alpha / 2]))
    return {"n": n, "diff": diff, "ci": [lo, hi], "ci_method": "paired-bootstrap",
            "p_value": (extreme + 1) / (iters + 1), "test": "sign-flip-permutation"}


# ----------------------------------------------------------------------------- lengths


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), ``q`` in [0, 100]."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def length_stats(lengths: Sequence[float]) -> dict:
    """``n, mean, median, p90, max`` of completion lengths (in tokens)."""
    if not lengths:
        return {"n": 0, "mean": None, "median": None, "p90": None, "max": None}
    return {
        "n": len(lengths),
        "mean": sum(lengths) / len(lengths),
        "median": percentile(lengths, 50),
        "p90": percentile(lengths, 90),
        "max": max(lengths),
    }


TWO_WAY = ("two-way bootstrap: each of the resamples draws the replicates (with replacement) and, independently, "
           "the held-out problems (with replacement); one draw serves every model, so pairs stay paired on both; "
           "the pooled value is the mean over the drawn replicates of the accuracy over the drawn problems. "
           "Crossed designs make it a little conservative (the replicate-by-problem interaction is counted twice).")


def bootstrap_pooled(vectors: dict[str, list[list[bool]]], pairs: list[tuple[str, str]], iters: int = 4000,
                     seed: int = 0) -> dict:
    """Pooled accuracies and differences (mean over replicates) with two 95% bootstrap intervals:
    ``ci`` resamples replicates and held-out problems (:data:`TWO_WAY`: run-to-run variance counts),
    ``ci_problems`` problems only (every replicate kept: the variance of the held-out draw alone).
    One resample of the problem indices serves every replicate and model, and one of the replicate
    indices every model, so the pairing is kept. ``vectors[model]`` holds one correctness vector per
    replicate, aligned on the same problems (a model evaluated once, like the greedy base, repeats
    its vector: the replicate draw cannot move it); ``pairs`` the (a, b) differences a minus b wanted.
    The problem draws are those of ``random.Random(seed)``, the replicate draws ``random.Random(seed + 1)``'s."""
    import numpy as np  # lazy: the rest of this module is standard library

    reps = {len(vs) for vs in vectors.values()}
    n_rep, n = max(reps), len(next(iter(vectors.values()))[0])
    mats = {m: np.asarray([vs[r % len(vs)] for r in range(n_rep)], dtype=np.float64) for m, vs in vectors.items()}
    rng, rng_rep = random.Random(seed), random.Random(seed + 1)
    full = list(range(n))
    point = {m: float(x.mean()) for m, x in mats.items()}
    draws = {w: {m: [] for m in vectors} for w in ("ci", "ci_problems")}
    for _ in range(iters):
        idx = np.asarray([rng.randrange(n) for _ in full])
        rep = np.asarray([rng_rep.randrange(n_rep) for _ in range(n_rep)])
        for m, x in mats.items():
            per_rep = x[:, idx].mean(axis=1)  # accuracy of each replicate on the drawn problems
            draws["ci_problems"][m].append(float(per_rep.mean()))
            draws["ci"][m].append(float(per_rep[rep].mean()))
    ci = lambda xs: [percentile(xs, 2.5), percentile(xs, 97.5)]  # noqa: E731
    models = {m: {"accuracy": point[m], **{w: ci(draws[w][m]) for w in draws}} for m in vectors}
    diffs = {(a, b): {"value": point[a] - point[b],
                      **{w: ci([x - y for x, y in zip(draws[w][a], draws[w][b])]) for w in draws}} for a, b in pairs}
    return {"models": models, "diffs": diffs}
