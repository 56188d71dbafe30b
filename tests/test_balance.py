"""Tests for nsjax.balance: both modes against brute-force references, determinism, the
per-class report, exact float64 threshold comparisons, and argument errors."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsjax import balance
from nsjax.balance import BalanceResult, balance_classes

# ----------------------------------------------------------------------------- references


def topk_reference(cls, conf, per_class, min_confidence, k) -> list[np.ndarray]:
    """Per class, the kept samples: candidates sorted by (-confidence, index), first per_class."""
    c64 = conf.astype(np.float32).astype(np.float64)
    kept = []
    for c in range(k):
        idx = np.flatnonzero((cls == c) & (c64 >= min_confidence))
        kept.append(idx[np.lexsort((idx, -c64[idx]))][:per_class])
    return kept


def official_reference(cls, conf, per_class, min_confidence, k):
    """filter_unlabel.py transcribed: per class (t_c, N_c, kept indices)."""
    thresholds = [i / 100.0 for i in range(101)]
    out = []
    for c in range(k):
        idx = np.flatnonzero(cls == c)
        probs = sorted((float(p) for p in conf[idx].astype(np.float32)), reverse=True)
        counts, cur, start = [], 0, 0  # prelim stats: samples in [t_j, t_{j+1}), top bin >= 1
        for j in reversed(range(len(thresholds))):
            while cur < len(probs) and probs[cur] >= thresholds[j]:
                cur += 1
            counts.append(cur - start)
            start = cur
        counts.reverse()
        total, pick = 0, -1
        for i in range(len(thresholds) - 1, -1, -1):
            if thresholds[i] >= min_confidence:
                total += counts[i]
                if total >= per_class:
                    pick = i
                    break
            if thresholds[i] == min_confidence:
                pick = i
                break
        if pick == -1:  # min_confidence off the grid: the lowest grid threshold above it
            pick = min(i for i, t in enumerate(thresholds) if t >= min_confidence)
        t_c = thresholds[pick]
        kept = idx[conf[idx].astype(np.float32).astype(np.float64) >= t_c]
        assert kept.size == total
        out.append((t_c, total, kept))
    return out


def check_report(res: BalanceResult, cls, conf, min_confidence, k):
    """Invariants shared by both modes: the report is what `indices` contains."""
    n = cls.size
    assert res.indices.dtype == np.int64 and res.indices.ndim == 1
    assert all(a.shape == (k,) for a in (res.candidates, res.kept_unique, res.copies))
    assert res.candidates.dtype == res.kept_unique.dtype == res.copies.dtype == np.int64
    assert res.lowest_confidence_kept.dtype == np.float32
    if res.indices.size:
        assert 0 <= res.indices.min() and res.indices.max() < n
    c32 = conf.astype(np.float32)
    assert np.all(c32[res.indices].astype(np.float64) >= min_confidence)
    cand = c32.astype(np.float64) >= min_confidence
    np.testing.assert_array_equal(res.candidates, np.bincount(cls[cand], minlength=k))
    np.testing.assert_array_equal(res.copies, np.bincount(cls[res.indices], minlength=k))
    unique = np.unique(res.indices)
    np.testing.assert_array_equal(res.kept_unique, np.bincount(cls[unique], minlength=k))
    for c in range(k):
        mine = unique[cls[unique] == c]
        want = c32[mine].min() if mine.size else np.nan
        np.testing.assert_array_equal(res.lowest_confidence_kept[c], want)
    np.testing.assert_array_equal(res.empty_classes, np.flatnonzero(res.candidates == 0))


# ----------------------------------------------------------------------------- strategies


@st.composite
def records(draw, max_n: int = 2000):
    """(pred_class, confidence, per_class, min_confidence, k): skewed classes (some short,
    some empty), confidences continuous, coarse (many ties) or on/next to the 0.01 grid."""
    n = draw(st.integers(0, max_n))
    k = draw(st.integers(1, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from([np.int32, np.int64, np.uint8, np.int16, np.uint64]))
    cls = rng.choice(k, n, p=rng.dirichlet(np.full(k, 0.5))).astype(dtype)
    kind = draw(st.sampled_from(["continuous", "coarse", "grid"]))
    conf = rng.random(n).astype(np.float32)
    if kind == "coarse":
        conf = (np.round(conf * 8) / 8).astype(np.float32)
    elif kind == "grid":
        on_grid = (rng.integers(0, 101, n) / 100).astype(np.float32)
        conf = np.nextafter(on_grid, rng.choice(np.array([0, 1], np.float32), n))
        conf = np.where(rng.random(n) < 0.5, on_grid, np.clip(conf, 0, 1)).astype(np.float32)
    share = draw(st.floats(0.05, 2.0) | st.just(1.0))  # per_class around a class's share
    per_class = draw(st.integers(1, 4) | st.just(max(1, round(share * n / k))))
    min_confidence = draw(
        st.sampled_from([0.0, 0.3, 0.305, 0.7, 1.0]) | st.floats(0.0, 1.0, allow_nan=False)
    )
    return cls, conf, per_class, min_confidence, k


# ----------------------------------------------------------------------------- topk


@settings(max_examples=80, deadline=None)
@given(records(), st.integers(0, 2**31))
def test_topk_matches_bruteforce(rec, seed):
    cls, conf, per_class, min_confidence, k = rec
    res = balance_classes(cls, conf, per_class=per_class, min_confidence=min_confidence,
                          seed=seed, num_classes=k)
    check_report(res, cls, conf, min_confidence, k)
    count = np.bincount(res.indices, minlength=cls.size)
    for c, want in enumerate(topk_reference(cls, conf, per_class, min_confidence, k)):
        got = np.flatnonzero((count > 0) & (cls == c))
        np.testing.assert_array_equal(got, np.sort(want))  # exactly the per_class best
        assert res.copies[c] == (per_class if want.size else 0)  # exact class size
        if want.size:
            lo, hi = per_class // want.size, -(-per_class // want.size)
            assert set(np.unique(count[want])) <= {lo, hi}  # copies differ by at most one
    assert res.indices.size == per_class * int((res.candidates > 0).sum())


def test_topk_ties_go_to_lower_index():
    cls = np.zeros(10, np.int32)
    conf = np.array([0.5, 1, 1, 0.9, 1, 1, 1, 0.2, 1, 1], np.float32)
    res = balance_classes(cls, conf, per_class=4)
    np.testing.assert_array_equal(np.sort(res.indices), [1, 2, 4, 5])
    assert res.lowest_confidence_kept[0] == 1.0


def test_topk_extra_copies_are_uniform_without_replacement():
    # 4 candidates, 6 rows: each gets 1 copy plus 2 extra drawn without replacement.
    cls, conf = np.zeros(4, np.int32), np.full(4, 0.9, np.float32)
    extra = np.zeros(4)
    seeds = 400
    for seed in range(seeds):
        count = np.bincount(balance_classes(cls, conf, per_class=6, seed=seed).indices)
        assert sorted(count) == [1, 1, 2, 2]
        extra += count - 1
    # each sample gets its extra copy with probability 1/2: within 5 sigma
    assert np.all(np.abs(extra / seeds - 0.5) < 5 * math.sqrt(0.25 / seeds))


# ----------------------------------------------------------------------------- official


@settings(max_examples=80, deadline=None)
@given(records(), st.integers(0, 2**31))
def test_official_matches_transcription(rec, seed):
    cls, conf, per_class, min_confidence, k = rec
    res = balance_classes(cls, conf, per_class=per_class, min_confidence=min_confidence,
                          seed=seed, mode="official", num_classes=k)
    check_report(res, cls, conf, min_confidence, k)
    count = np.bincount(res.indices, minlength=cls.size)
    for c, (t_c, n_c, kept) in enumerate(official_reference(cls, conf, per_class,
                                                             min_confidence, k)):
        in_class = np.flatnonzero(cls == c)
        assert np.all(count[np.setdiff1d(in_class, kept)] == 0)  # only samples >= t_c
        if n_c == 0:
            assert res.copies[c] == 0
            continue
        rate = per_class / n_c
        assert set(np.unique(count[kept])) <= {math.floor(rate), math.floor(rate) + 1}
        if rate >= 1:  # every sample >= t_c is kept
            assert res.kept_unique[c] == n_c
        assert n_c * math.floor(rate) <= res.copies[c] <= n_c * (math.floor(rate) + 1)


def test_official_copies_have_the_official_expectation():
    rng = np.random.default_rng(0)
    # class 0: 1000 samples in [0.9, 1), over-full; class 1: 70 samples, short (rate 300/70);
    # class 2: only below min_confidence.
    cls = np.repeat(np.arange(3, dtype=np.int32), [1000, 70, 30])
    conf = np.concatenate([rng.uniform(0.9, 1, 1000), rng.uniform(0.5, 0.9, 70),
                           rng.uniform(0, 0.29, 30)]).astype(np.float32)
    per_class, seeds = 300, 300
    ref = official_reference(cls, conf, per_class, 0.3, 3)
    totals = np.zeros((seeds, 3))
    per_sample = np.zeros(cls.size)
    for seed in range(seeds):
        res = balance_classes(cls, conf, per_class=per_class, seed=seed, mode="official")
        totals[seed] = res.copies
        per_sample += np.bincount(res.indices, minlength=cls.size)
    for c, (_, n_c, kept) in enumerate(ref[:2]):
        rate = per_class / n_c
        frac = rate - math.floor(rate)
        sigma = math.sqrt(n_c * frac * (1 - frac) / seeds)
        assert abs(totals[:, c].mean() - per_class) < 5 * sigma + 1e-9
        assert np.all(np.abs(per_sample[kept] / seeds - rate)
                      < 5 * math.sqrt(frac * (1 - frac) / seeds) + 1e-9)
    assert ref[0][1] > per_class  # class 0 was really subsampled...
    assert totals[:, 0].std() > 0  # ...at random
    assert np.all(totals[:, 2] == 0)


# ----------------------------------------------------------------------------- both modes


@settings(max_examples=40, deadline=None)
@given(records(max_n=600), st.sampled_from(["topk", "official"]), st.integers(0, 2**31))
def test_same_seed_same_output_whatever_the_chunking(rec, mode, seed):
    cls, conf, per_class, min_confidence, k = rec
    kw = dict(per_class=per_class, min_confidence=min_confidence, seed=seed, mode=mode)
    runs = []
    for chunk in (1 << 16, 7, 64):
        with mock.patch.object(balance, "_CHUNK", chunk):
            runs.append(balance_classes(cls, conf, **kw))
    for other in runs[1:]:
        np.testing.assert_array_equal(other.indices, runs[0].indices)
        for name in ("candidates", "kept_unique", "copies", "lowest_confidence_kept"):
            np.testing.assert_array_equal(getattr(other, name), getattr(runs[0], name))


@pytest.mark.parametrize("mode", ["topk", "official"])
def test_output_is_a_seeded_shuffle(mode):
    rng = np.random.default_rng(1)
    cls = rng.integers(0, 5, 1000).astype(np.int32)
    conf = rng.random(1000).astype(np.float32)
    a, b = (balance_classes(cls, conf, per_class=100, seed=s, mode=mode).indices for s in (0, 1))
    assert not np.array_equal(a, b)
    assert not np.all(np.diff(a) >= 0)  # not left in index order
    if mode == "topk":  # full classes: the same rows, in another order
        np.testing.assert_array_equal(np.sort(a), np.sort(b))


@pytest.mark.parametrize("mode", ["topk", "official"])
def test_min_confidence_is_compared_in_float64(mode):
    # float32(0.7) < 0.7 and float32(0.3) > 0.3 (as float64): the first is not a candidate.
    assert float(np.float32(0.7)) < 0.7 < float(np.nextafter(np.float32(0.7), np.float32(1)))
    below = np.float32(0.7)
    above = np.nextafter(below, np.float32(1))
    conf = np.array([below, above, np.float32(0.3)], np.float32)
    res = balance_classes(np.array([0, 1, 2]), conf, per_class=1, min_confidence=0.7, mode=mode)
    np.testing.assert_array_equal(res.candidates, [0, 1, 0])
    np.testing.assert_array_equal(res.indices, [1])
    res = balance_classes(np.array([0, 1, 2]), conf, per_class=1, min_confidence=0.3, mode=mode)
    np.testing.assert_array_equal(res.candidates, [1, 1, 1])


def test_official_grid_is_compared_in_float64():
    # float32(0.57) < 0.57: it falls in the [0.56, 0.57) bin, so 5 of them do not fill 0.57.
    assert float(np.float32(0.57)) < 0.57
    conf = np.array([0.58] * 3 + [0.57] * 5, np.float32)
    res = balance_classes(np.zeros(8, np.int32), conf, per_class=4, mode="official")
    ((t_c, n_c, _),) = official_reference(np.zeros(8, np.int32), conf, 4, 0.3, 1)
    assert (t_c, n_c) == (0.56, 8)
    assert res.kept_unique[0] <= 8 and res.lowest_confidence_kept[0] in (np.float32(0.57),
                                                                          np.float32(0.58))


def test_numpy_scalar_arguments_keep_their_exact_value():
    # np.float32(0.3) is 0.30000001192...: the official grid starts at 0.31, not 0.30.
    conf = np.array([0.9, 0.305, 0.3], np.float32)
    res = balance_classes(np.zeros(3, np.int64), conf, per_class=np.int64(3),
                          min_confidence=np.float32(0.3), mode="official")
    assert res.per_class == 3 and type(res.per_class) is int
    np.testing.assert_array_equal(res.candidates, [3])  # all three are >= 0.3f
    np.testing.assert_array_equal(np.unique(res.indices), [0])  # t_c = 0.31


def test_accepts_jax_arrays():
    import jax.numpy as jnp

    rng = np.random.default_rng(4)
    cls, conf = rng.integers(0, 3, 300).astype(np.int32), rng.random(300).astype(np.float32)
    got = balance_classes(jnp.asarray(cls), jnp.asarray(conf), per_class=40, seed=1)
    np.testing.assert_array_equal(
        got.indices, balance_classes(cls, conf, per_class=40, seed=1).indices)


@pytest.mark.parametrize("mode", ["topk", "official"])
@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_other_float_dtypes_rank_as_float32(mode, dtype):
    rng = np.random.default_rng(2)
    cls = rng.integers(0, 4, 500)
    conf = rng.random(500).astype(dtype)
    got = balance_classes(cls, conf, per_class=50, mode=mode, seed=3)
    want = balance_classes(cls, conf.astype(np.float32), per_class=50, mode=mode, seed=3)
    np.testing.assert_array_equal(got.indices, want.indices)


def test_negative_zero_is_zero():
    res = balance_classes(np.array([0, 0]), np.array([-0.0, 0.0], np.float32), per_class=2,
                          min_confidence=0.0)
    np.testing.assert_array_equal(np.sort(res.indices), [0, 1])
    assert res.lowest_confidence_kept[0] == 0.0


@pytest.mark.parametrize("mode", ["topk", "official"])
def test_class_without_candidate_is_reported(mode):
    cls = np.array([0, 0, 2, 2, 2], np.int32)
    conf = np.array([0.9, 0.8, 0.1, 0.2, 0.29], np.float32)
    res = balance_classes(cls, conf, per_class=3, mode=mode, num_classes=4)
    np.testing.assert_array_equal(res.empty_classes, [1, 2, 3])
    np.testing.assert_array_equal(res.candidates, [2, 0, 0, 0])
    assert np.isnan(res.lowest_confidence_kept[1:]).all()
    assert "3 empty" in res.summary() and "1 short" in res.summary()


@pytest.mark.parametrize("mode", ["topk", "official"])
@pytest.mark.parametrize("num_classes", [None, 3])
def test_empty_input(mode, num_classes):
    res = balance_classes(np.zeros(0, np.int32), np.zeros(0, np.float32), per_class=5,
                          mode=mode, num_classes=num_classes)
    assert res.indices.shape == (0,) and res.indices.dtype == np.int64
    assert res.copies.shape == res.lowest_confidence_kept.shape == (num_classes or 0,)


# ----------------------------------------------------------------------------- errors

GOOD = dict(pred_class=np.array([0, 1, 1], np.int32),
            confidence=np.array([0.5, 0.9, 0.1], np.float32), per_class=2)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(confidence=np.array([0.5, 0.9], np.float32)), ValueError, "pred_class and confid"),
        (dict(pred_class=np.zeros((3, 1), np.int32)), ValueError, "pred_class must have shape"),
        (dict(confidence=np.zeros((3, 1), np.float32)), ValueError, "confidence must have shape"),
        (dict(pred_class=np.array([0.0, 1.0, 1.0])), TypeError, "pred_class .*integer.*float64"),
        (dict(pred_class=np.array([True, False, True])), TypeError, "pred_class .*integer"),
        (dict(confidence=np.array([0, 1, 1])), TypeError, "confidence .*floating.*int64"),
        (dict(confidence=np.array([0.5, np.nan, 0.1], np.float32)), ValueError,
         r"confidence must be in \[0, 1\].*nan"),
        (dict(confidence=np.array([0.5, 1.5, 0.1], np.float32)), ValueError,
         r"confidence must be in \[0, 1\].*max 1.5"),
        (dict(confidence=np.array([0.5, -0.1, 0.1], np.float32)), ValueError,
         r"confidence must be in \[0, 1\].*min -0.1"),
        (dict(pred_class=np.array([0, -1, 1])), ValueError, "pred_class must be >= 0, got min -1"),
        (dict(num_classes=1), ValueError, "pred_class must be < num_classes=1, got max 1"),
        (dict(num_classes=0), ValueError, "num_classes must be >= 1, got 0"),
        (dict(per_class=0), ValueError, "per_class must be >= 1, got 0"),
        (dict(per_class=2.0), TypeError, "per_class must be an int, got float"),
        (dict(min_confidence=1.5), ValueError, r"min_confidence must be in \[0, 1\], got 1.5"),
        (dict(min_confidence=-0.1), ValueError, r"min_confidence must be in \[0, 1\]"),
        (dict(min_confidence=float("nan")), ValueError, r"min_confidence must be in \[0, 1\]"),
        (dict(mode="paper"), ValueError, r"mode must be one of \('topk', 'official'\), got 'pap"),
        (dict(seed=-1), ValueError, "seed must be >= 0, got -1"),
    ],
)
def test_bad_input_names_the_argument(change, error, match):
    with pytest.raises(error, match=match):
        balance_classes(**{**GOOD, **change})


# ----------------------------------------------------------------------------- scale


@pytest.mark.slow
def test_topk_at_ten_million_records():
    n, k, per_class = 10**7, 1000, 4300
    rng = np.random.default_rng(0)
    cls = rng.integers(0, k, n, dtype=np.int32)
    conf = rng.beta(1.6, 1.0, n).astype(np.float32)
    cls[cls == 7] = 8  # an empty class
    cls[np.flatnonzero(cls == 9)[1000:]] = 10  # a short class
    res = balance_classes(cls, conf, per_class=per_class, num_classes=k)
    has = res.candidates > 0
    assert not has[7] and 0 < res.candidates[9] < per_class
    np.testing.assert_array_equal(res.copies, np.where(has, per_class, 0))
    np.testing.assert_array_equal(res.copies, np.bincount(cls[res.indices], minlength=k))
    # the kept set is the per_class best of each class by (-confidence, index)
    cand = np.flatnonzero(conf >= 0.3)
    order = cand[np.lexsort((cand, -conf[cand], cls[cand]))]
    first = np.searchsorted(cls[order], np.arange(k))
    rank = np.arange(order.size) - first[cls[order]]
    np.testing.assert_array_equal(np.unique(res.indices), np.sort(order[rank < per_class]))
