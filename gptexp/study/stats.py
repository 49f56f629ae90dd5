"""Means, 95% intervals and paired differences of a study's metrics.

Two sources of noise, two intervals:
  seeds  Student-t interval over the training seeds (the per-seed values; for a pair of arms, the
         per-seed differences on the same hidden words, so the words' difficulty cancels);
  words  normal interval over the hidden words of a paired difference (ratio estimator of
         sum(bits_a - bits_b) / sum(bytes), per-word differences averaged over the shared seeds).
A difference is claimed only where both intervals exclude zero; with one shared seed, never.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

# Two-sided 95% Student-t quantiles t(0.975, df), df = 1..30 (beyond: the normal 1.96).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
Z975 = 1.959964


def t975(df: int) -> float:
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= len(_T975) else Z975


@dataclass(frozen=True)
class Interval:
    mean: float
    std: float  # sample standard deviation (ddof=1); NaN for one value
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def seed_interval(values: Sequence[float]) -> Interval:
    """Mean and 95% Student-t interval of per-seed values (NaN bounds with fewer than two)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, math.nan, 1)
    std = float(x.std(ddof=1))
    half = t975(n - 1) * std / math.sqrt(n)
    return Interval(mean, std, mean - half, mean + half, n)


def word_interval(bits_a: np.ndarray, bits_b: np.ndarray, word_bytes: np.ndarray) -> Interval:
    """Paired difference in bits per byte over hidden words, with a 95% normal interval.

    bits_a, bits_b: (seeds, words) bits of each hidden word in the shared seeds; word_bytes (words,).
    The estimate is D = sum_w d_w / sum_w b_w with d_w the seed-averaged difference of word w; its
    standard error is that of a ratio estimator: sqrt(n / (n - 1) * sum_w (d_w - D b_w)^2) / sum_w b_w.
    """
    d = (np.asarray(bits_a, dtype=np.float64) - np.asarray(bits_b, dtype=np.float64)).mean(axis=0)
    b = np.asarray(word_bytes, dtype=np.float64)
    n, total = len(d), b.sum()
    if n < 2 or total <= 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, n)
    estimate = float(d.sum() / total)
    residual = d - estimate * b
    se = math.sqrt(n / (n - 1) * float((residual**2).sum())) / total
    return Interval(estimate, se * math.sqrt(n), estimate - Z975 * se, estimate + Z975 * se, n)


@dataclass(frozen=True)
class PairedDifference:
    metric: str
    a: str
    b: str
    seeds: list[int]
    by_seed: Interval  # over the shared seeds' per-seed differences
    by_word: Interval  # over the hidden words
    claim: bool

    def to_dict(self) -> dict[str, object]:
        return {"metric": self.metric, "a": self.a, "b": self.b, "seeds": self.seeds, "difference": self.by_seed.mean,
                "by_seed": self.by_seed.to_dict(), "by_word": self.by_word.to_dict(), "claim": self.claim}


def paired_difference(metric: str, a: str, b: str, seeds: list[int], bits_a: np.ndarray, bits_b: np.ndarray,
                      word_bytes: np.ndarray) -> PairedDifference:
    """a minus b on `metric` over the shared seeds; bits (seeds, words) on the same hidden words."""
    total = float(np.asarray(word_bytes, dtype=np.float64).sum())
    per_seed = (np.asarray(bits_a).sum(axis=1) - np.asarray(bits_b).sum(axis=1)) / total
    by_seed = seed_interval(per_seed.tolist())
    by_word = word_interval(bits_a, bits_b, word_bytes)
    claim = by_seed.n >= 2 and by_seed.excludes_zero() and by_word.excludes_zero()
    return PairedDifference(metric, a, b, seeds, by_seed, by_word, claim)
