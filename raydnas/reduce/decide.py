"""The statistics of a study that decides: which methods are out, how many seeds would decide,
and how likely each method is the best.

A method's values are one number per search seed: its retrained cell's truth (the mean over
that seed's evaluation seeds). Methods are independent samples (seed k of two methods shares
nothing that makes them paired), so every comparison is **Welch's t-test** (unequal variances).

* :func:`welch_less` — the one-sided p-value of H0: μ_a ≥ μ_b against μ_a < μ_b
  (``scipy.stats.ttest_ind(a, b, equal_var=False, alternative="less")``).
* :func:`eliminate` — one round of a race: every pair of methods compared (two-sided Welch),
  Bonferroni-corrected over the pairs; a method significantly below ``top_k`` others is out. A race
  looks after every round; with ``alpha_spending: bonferroni`` (the default) each round tests at
  α / (the race's largest number of rounds), so by the union bound the chance that the race
  ever eliminates a truly best method stays below α however the race stops; ``none`` tests
  every round at α (F-race's practice: more eliminations, no guarantee over the rounds).
* :func:`seeds_to_tell` — per method, the search seeds each it would take to tell it from the
  leader with a two-sided Welch test at 95 % and 80 % power, from the observed means and
  variances (power from the noncentral t distribution; a planning estimate, not a guarantee:
  the variances are themselves estimates from a few seeds).
* :func:`p_best` — the bootstrap probability that each method has the highest mean (every
  method's seeds resampled with replacement; exact enumeration when the resamples are few).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from scipy import stats

#: the report's planning defaults: 95 % confidence, 80 % power
CONFIDENCE, POWER = 0.95, 0.80
#: beyond this many seeds each, "more than MAX_SEEDS" (the difference is too small to chase)
MAX_SEEDS = 1000


def _mean_var(x: Sequence[float]) -> tuple[float, float]:
    n = len(x)
    m = sum(x) / n
    return m, (sum((v - m) ** 2 for v in x) / (n - 1) if n > 1 else math.nan)


def welch_less(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(t, df, p) of Welch's test of H0: mean(a) ≥ mean(b) against H1: mean(a) < mean(b).

    Both samples need ≥ 2 values. Zero variance in both: p = 0 when mean(a) < mean(b), 1 when
    it is larger, 0.5 when equal (the t statistic is infinite or undefined)."""
    ma, va = _mean_var(a)
    mb, vb = _mean_var(b)
    se2 = va / len(a) + vb / len(b)
    if se2 == 0:
        return (-math.inf if ma < mb else math.inf if ma > mb else 0.0), math.nan, \
            (0.0 if ma < mb else 1.0 if ma > mb else 0.5)
    t = (ma - mb) / math.sqrt(se2)
    df = se2 ** 2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))
    return t, df, float(stats.t.cdf(t, df))


def welch_two_sided(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(t, df, p) of Welch's two-sided test of H0: mean(a) = mean(b)."""
    t, df, p_less = welch_less(a, b)
    if math.isnan(df):  # no variance in either sample (welch_less's certain cases)
        return t, df, min(1.0, 2 * min(p_less, 1 - p_less))
    return t, df, float(min(1.0, 2 * stats.t.sf(abs(t), df)))


@dataclass
class Round:
    """One round of a race: the comparisons, and who is out."""

    number: int
    seeds: dict[str, int]                       # method -> search seeds with a value
    means: dict[str, float]
    boundary: str                               # the leader (top_k = 1) or the k-th method
    alpha: float                                # this round's family-wise level
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)  # eliminated: its test
    worse_than: dict[str, list[str]] = field(default_factory=dict)  # significantly below
    eliminated: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # no seed with a value: out as failed

    def to_dict(self) -> dict:
        return {"round": self.number, "seeds": dict(self.seeds), "means": dict(self.means),
                "boundary": self.boundary, "alpha": self.alpha,
                "tests": {k: dict(v) for k, v in self.tests.items()},
                "worse_than": {k: list(v) for k, v in self.worse_than.items()},
                "eliminated": list(self.eliminated), "failed": list(self.failed)}


def eliminate(values: dict[str, list[float]], alpha: float, top_k: int = 1,
              number: int = 1) -> Round:
    """One race round over the contenders ``values`` (method -> its seeds' values; a method
    with no value failed every seed and is out as failed).

    Every pair of methods with ≥ 2 values each, and some variance in at least one of them, is
    compared with Welch's two-sided test at ``alpha`` / (the number of pairs compared)
    (Bonferroni); a significant pair puts the method with the lower mean below the other. A
    method significantly below at least ``top_k`` others is out. A method truly among the top
    ``top_k`` is out only if some comparison puts it below a method that is not truly better:
    a false rejection or a rejection in the wrong direction, each of probability ≤ ``alpha`` /
    (number of pairs) for its pair, so ≤ ``alpha`` per round by the union bound (the leader
    the data chose does not matter: the family is every pair). Two samples without any
    variance (the same cell found and retrained alike) are not compared: a zero variance is
    no evidence of precision."""
    failed = [m for m, v in values.items() if not v]
    live = {m: v for m, v in values.items() if v}
    means = {m: sum(v) / len(v) for m, v in live.items()}
    order = sorted(live, key=lambda m: -means[m])
    r = Round(number, {m: len(v) for m, v in live.items()}, means,
              order[min(top_k, len(order)) - 1] if order else "", alpha, failed=failed)
    pairs = [(a, b) for a, b in itertools.combinations(order, 2)
             if len(live[a]) > 1 and len(live[b]) > 1
             and (len(set(live[a])) > 1 or len(set(live[b])) > 1)]
    below: dict[str, list[str]] = {m: [] for m in order}
    for a, b in pairs:
        lo, hi = (a, b) if means[a] < means[b] else (b, a)
        t, df, p = welch_two_sided(live[lo], live[hi])
        p_adj = min(1.0, p * len(pairs))
        if p_adj <= alpha and means[lo] < means[hi]:
            below[lo].append(hi)
            best = r.tests.get(lo)
            if best is None or p < best["p"]:
                r.tests[lo] = {"vs": hi, "t": t, "df": df, "p": p, "p_adj": p_adj}
    r.worse_than = {m: v for m, v in below.items() if v}
    r.eliminated = [m for m in order if len(below[m]) >= top_k]
    r.tests = {m: v for m, v in r.tests.items() if m in r.eliminated}
    return r


def power_welch(delta: float, var_a: float, var_b: float, n: int,
                confidence: float = CONFIDENCE) -> float:
    """Power of the two-sided Welch test at level 1 − ``confidence`` with ``n`` values in each
    sample, for a true difference ``delta`` and variances ``var_a``, ``var_b``: the noncentral
    t distribution with Welch's degrees of freedom for equal n."""
    s2 = var_a + var_b
    if s2 == 0:
        return 1.0 if delta != 0 else 0.0
    df = (n - 1) * s2 ** 2 / (var_a ** 2 + var_b ** 2)
    nc = abs(delta) / math.sqrt(s2 / n)
    crit = stats.t.ppf(1 - (1 - confidence) / 2, df)
    upper, lower = stats.nct.sf(crit, df, nc), stats.nct.cdf(-crit, df, nc)
    # far in the tail scipy's nct can return NaN for a probability that is ~0 (or ~1)
    upper = 1.0 if math.isnan(upper) else upper
    lower = 0.0 if math.isnan(lower) else lower
    return float(min(1.0, upper + lower))


def seeds_to_tell(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE,
                  power: float = POWER) -> float:
    """The smallest number of seeds n (each) at which the two-sided Welch test tells samples
    like ``a`` and ``b`` apart with this confidence and power (their observed means and
    variances taken as the truth). NaN with fewer than 2 values in either; ``inf`` when the
    means are equal or n would exceed :data:`MAX_SEEDS`."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    ma, va = _mean_var(a)
    mb, vb = _mean_var(b)
    delta = ma - mb
    if delta == 0:
        return math.inf
    if power_welch(delta, va, vb, MAX_SEEDS, confidence) < power:
        return math.inf
    lo, hi = 2, MAX_SEEDS  # power grows with n: the smallest n by bisection
    if power_welch(delta, va, vb, lo, confidence) >= power:
        return float(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if power_welch(delta, va, vb, mid, confidence) >= power:
            hi = mid
        else:
            lo = mid
    return float(hi)


#: :func:`p_best` enumerates every resample when there are at most this many combinations
EXACT_LIMIT = 20_000


def _mean(v: Sequence[float]) -> float:
    """A mean that does not depend on the order of the values (ties stay ties)."""
    return round(math.fsum(v) / len(v), 12)


def _winners(names: list[str], means: list[float]) -> list[str]:
    top = max(means)
    return [names[i] for i, x in enumerate(means) if x == top]


def p_best(values: dict[str, list[float]], reps: int = 4000, seed: int = 0) -> dict[str, float]:
    """P(method has the highest mean) under the bootstrap: every method's seeds resampled with
    replacement, ties for the best shared equally. Exact (every resample of every method,
    weighted by its multiplicity) when that is at most :data:`EXACT_LIMIT` combinations, else
    ``reps`` seeded draws. Methods without (finite) values get 0."""
    live = {m: [x for x in v if math.isfinite(x)] for m, v in values.items()}
    live = {m: v for m, v in live.items() if v}
    out = {m: 0.0 for m in values}
    if not live:
        return out
    names = list(live)
    sizes = [len(live[m]) ** len(live[m]) for m in names]
    if math.prod(sizes) <= EXACT_LIMIT:
        dists = [_mean_distribution(live[m]) for m in names]
        for combo in itertools.product(*dists):
            w = math.prod(p for _, p in combo)
            winners = _winners(names, [x for x, _ in combo])
            for n in winners:
                out[n] += w / len(winners)
        return out
    rng = random.Random(seed)
    for _ in range(reps):
        means = [_mean([v[rng.randrange(len(v))] for _ in v]) for v in live.values()]
        winners = _winners(names, means)
        for n in winners:
            out[n] += 1 / (reps * len(winners))
    return out


def _mean_distribution(v: list[float]) -> list[tuple[float, float]]:
    """The exact distribution of a bootstrap resample's mean: (mean, probability) per distinct
    multiset of draws."""
    n = len(v)
    probs: dict[float, float] = {}
    for draw in itertools.product(range(n), repeat=n):
        m = _mean([v[i] for i in sorted(draw)])
        probs[m] = probs.get(m, 0.0) + n ** -n
    return list(probs.items())
