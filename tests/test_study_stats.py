"""Study statistics: seed intervals and paired differences equal hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gptexp.study.stats import paired_difference, seed_interval, word_interval


def test_seed_interval_by_hand():
    iv = seed_interval([2.0, 2.2, 2.4])
    # mean 2.2, sd = sqrt((0.04 + 0 + 0.04) / 2) = 0.2, half = t(0.975, 2) * 0.2 / sqrt(3) = 4.303 * 0.11547
    assert iv.mean == pytest.approx(2.2) and iv.std == pytest.approx(0.2)
    assert iv.high - iv.mean == pytest.approx(4.303 * 0.2 / math.sqrt(3))
    one = seed_interval([1.5])
    assert one.mean == 1.5 and math.isnan(one.low) and not one.excludes_zero()


def test_paired_interval_by_hand():
    # two seeds, three words of 2, 3 and 5 bytes (10 bytes)
    bits_a = np.array([[4.0, 6.0, 10.0], [5.0, 6.0, 9.0]])  # 20 and 20 bits
    bits_b = np.array([[3.0, 5.0, 8.0], [3.0, 4.0, 9.0]])   # 16 and 16 bits
    word_bytes = np.array([2, 3, 5])
    diff = paired_difference("val/pll_l2r_bpb", "char", "bpe", [1, 2], bits_a, bits_b, word_bytes)
    # per seed: (20 - 16) / 10 = 0.4 and (20 - 16) / 10 = 0.4: sd 0, interval [0.4, 0.4]
    assert diff.by_seed.mean == pytest.approx(0.4) and diff.by_seed.low == pytest.approx(0.4)
    # per word, seed-averaged: d = [1.5, 1.5, 1.0]; D = 4 / 10 = 0.4; residuals d - D b = [0.7, 0.3, -1.0]
    # se = sqrt(3 / 2 * (0.49 + 0.09 + 1.0)) / 10 = sqrt(2.37) / 10
    se = math.sqrt(1.5 * 1.58) / 10
    assert diff.by_word.mean == pytest.approx(0.4)
    assert diff.by_word.low == pytest.approx(0.4 - 1.959964 * se) and diff.by_word.high == pytest.approx(0.4 + 1.959964 * se)
    assert diff.claim == (0.4 - 1.959964 * se > 0)


def test_no_claim_when_the_interval_crosses_zero():
    rng = np.random.default_rng(0)
    bits_a = rng.normal(5, 1, (3, 200))
    bits_b = bits_a + rng.normal(0, 1, (3, 200))  # no true difference, noisy
    diff = paired_difference("val/bpb", "a", "b", [1, 2, 3], bits_a, bits_b, np.full(200, 4))
    assert diff.by_word.low < 0 < diff.by_word.high and not diff.claim
    assert word_interval(bits_a[:, :1], bits_b[:, :1], np.array([4])).n == 1
