"""Class balancing of pseudo-labelled data (Noisy Student, Xie et al. 2019): keep confident
predictions and give every predicted class the same number of rows, duplicating the samples
of classes that are short.

Host-side NumPy, built for 10^8 records: one in-place sort of a uint64 key per candidate and
a few chunked passes over the inputs, so the time stays within a small multiple of one
`np.argsort` of the confidences and the memory within a small multiple of the inputs.

How it works. A candidate (confidence >= `min_confidence`) gets the key
`(class << 32) | (bits(1.0f) - bits(float32(confidence)))`; sorted keys run through the classes
in order, each from most to least confident (the bits of non-negative float32 numbers are
monotone). From the sorted keys each mode builds a per-class `_Plan`: which keys are kept
outright, which are ranked in index order (ties, short classes, the official rule's draws), and
how many copies each gets. One pass over the data writes the rows; a seeded shuffle mixes them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np

from nsjax._checks import (
    check_choice,
    check_floating,
    check_integer,
    check_positive_int,
    check_probability,
    check_rank,
    check_same_dims,
)

__all__ = ["BalanceResult", "balance_classes"]

_MODES = ("topk", "official")
_CHUNK = 1 << 16  # records per step of a pass: temporaries of ~1 MB stay in cache (measured)
_ONE_BITS = np.uint32(0x3F800000)  # float32 bits of 1.0
_LOW = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)
_MAX_CLASSES = 1 << 32  # the class fills the high 32 bits of a key


@dataclasses.dataclass(frozen=True, eq=False)
class BalanceResult:
    """The balanced selection and a per-class report (K classes).

    indices: int64[M] positions in the inputs, duplicates allowed, in seeded shuffled order.
    candidates: int64[K] samples predicted as the class with confidence >= min_confidence.
    kept_unique: int64[K] distinct samples of the class in `indices`.
    copies: int64[K] rows of the class in `indices`.
    lowest_confidence_kept: float32[K] lowest confidence among the kept samples, NaN if none.
    per_class, mode: the arguments that produced it.
    """

    indices: np.ndarray
    candidates: np.ndarray
    kept_unique: np.ndarray
    copies: np.ndarray
    lowest_confidence_kept: np.ndarray
    per_class: int
    mode: str

    @property
    def empty_classes(self) -> np.ndarray:
        """int64[E]: classes without any candidate (they contribute no rows)."""
        return np.flatnonzero(self.candidates == 0)

    def summary(self) -> str:
        """A few lines for a log: sizes, and how many classes are empty, short or full."""
        short = int(((self.candidates > 0) & (self.candidates < self.per_class)).sum())
        full = int((self.candidates >= self.per_class).sum())
        return (
            f"balance_classes(mode={self.mode!r}, per_class={self.per_class}): "
            f"{self.indices.size} rows from {int(self.kept_unique.sum())} unique samples\n"
            f"  {self.candidates.size} classes: {full} full, {short} short (duplicated), "
            f"{self.empty_classes.size} empty"
        )


def balance_classes(
    pred_class,
    confidence,
    *,
    per_class: int,
    min_confidence: float = 0.3,
    seed: int = 0,
    mode: str = "topk",
    num_classes: int | None = None,
) -> BalanceResult:
    """Select rows so that every predicted class holds (about) `per_class` of them.

    **Arguments:**

    - `pred_class`: int[N] teacher's predicted class per sample (any integer dtype, >= 0).
    - `confidence`: float[N] teacher's confidence (max probability) per sample, in [0, 1].
      Ranked as float32 (a float64 input is rounded to float32 first); comparisons with
      `min_confidence` and with the official grid are exact, as in float64.
    - `per_class`: rows wanted per class (ImageNet recipe: 130_000).
    - `min_confidence`: no sample below it is kept (paper: 0.3).
    - `seed`: seeds every random choice; same inputs and seed give bitwise the same result.
    - `mode`: "topk" (the paper's rule, strict by confidence) or "official" (the released
      `filter_unlabel.py` rule, seeded).
    - `num_classes`: K; None means max(pred_class) + 1.

    The candidates of class c are the samples predicted c with confidence >= min_confidence.

    "topk": a class with >= per_class candidates keeps its per_class most confident (equal
    confidences: lower index first). A class with n < per_class candidates keeps them all,
    each floor(per_class / n) or ceil(per_class / n) times; the per_class mod n that get the
    extra copy are drawn without replacement. Every class with a candidate holds exactly
    per_class rows.

    "official": per class, walk the thresholds t = i/100 >= min_confidence from high to low
    and stop at the first whose count N_c of candidates >= t reaches per_class, else at the
    lowest. Every candidate >= t_c gets per_class / N_c copies, the fractional part drawn as a
    Bernoulli: about per_class rows per class, over-full classes subsampled uniformly.

    **Returns:** A `BalanceResult`. `indices` is shuffled, so any prefix is a uniform sample of the rows.
    Empty input gives an empty result.

    **Raises:** TypeError, ValueError: naming the argument, before any work, for bad input.
    """
    pred_class, confidence, per_class, min_confidence, num_classes = _validate(
        pred_class, confidence, per_class, min_confidence, seed, mode, num_classes
    )
    rng = np.random.default_rng(seed)
    cand_low = _low_bits(_ceil_f32(min_confidence))
    keys = _sorted_candidate_keys(pred_class, confidence, cand_low)
    starts = np.searchsorted(keys, np.arange(num_classes + 1, dtype=np.uint64) << _SHIFT)
    if mode == "topk":
        plan = _topk_plan(keys, starts, per_class, cand_low, rng)
    else:
        plan = _official_plan(keys, starts, per_class, min_confidence, rng)
    del keys  # the largest temporary: the pass needs only the per-class plan
    indices, kept_unique, copies, lowest = _select(pred_class, confidence, plan)
    rng.shuffle(indices)
    return BalanceResult(indices, np.diff(starts), kept_unique, copies, lowest, per_class, mode)


# ----------------------------------------------------------------------------- checks


def _validate(pred_class, confidence, per_class, min_confidence, seed, mode, num_classes):
    """Checks every argument with O(1) temporaries. Returns the two arrays, per_class (int),
    min_confidence (float, so that comparisons with it are in float64) and K."""
    check_choice("mode", mode, _MODES)
    per_class = check_positive_int("per_class", per_class)
    min_confidence = check_probability("min_confidence", min_confidence)
    check_positive_int("seed", seed, minimum=0)
    if num_classes is not None:
        check_positive_int("num_classes", num_classes)
        if num_classes > _MAX_CLASSES:
            raise ValueError(f"num_classes must be <= 2**32, got {num_classes}")
    pred_class, confidence = np.asarray(pred_class), np.asarray(confidence)
    check_rank("pred_class", pred_class, 1, "[N]")
    check_rank("confidence", confidence, 1, "[N]")
    check_same_dims("pred_class", pred_class, "confidence", confidence)
    check_integer("pred_class", pred_class)
    check_floating("confidence", confidence)
    if pred_class.size == 0:
        return pred_class, confidence, per_class, min_confidence, num_classes or 0
    lo, hi = confidence.min(), confidence.max()  # a NaN propagates and fails both tests
    if not (lo >= 0 and hi <= 1):
        raise ValueError(f"confidence must be in [0, 1] without NaN, got min {lo}, max {hi}")
    cmin, cmax = int(pred_class.min()), int(pred_class.max())
    if cmin < 0:
        raise ValueError(f"pred_class must be >= 0, got min {cmin}")
    if num_classes is None and cmax >= _MAX_CLASSES:
        raise ValueError(f"pred_class must be < 2**32, got max {cmax}")
    if num_classes is not None and cmax >= num_classes:
        raise ValueError(f"pred_class must be < num_classes={num_classes}, got max {cmax}")
    num_classes = cmax + 1 if num_classes is None else int(num_classes)
    return pred_class, confidence, per_class, min_confidence, num_classes


# ----------------------------------------------------------------------------- keys


def _ceil_f32(t: float) -> np.float32:
    """The smallest float32 >= t, so `x >= t` (float64) equals `x >= _ceil_f32(t)` (float32)."""
    x = np.float32(t)
    return x if float(x) >= t else np.nextafter(x, np.float32(np.inf))


def _low_bits(p) -> np.ndarray:
    """uint32, p's shape: the low half of a key, 0 for p = 1, growing as p (in [0, 1]) falls."""
    bits = np.asarray(p, np.float32).view(np.uint32) & np.uint32(0x7FFFFFFF)  # -0.0 as 0.0
    return _ONE_BITS - bits


def _keys(cls: np.ndarray, low: np.ndarray) -> np.ndarray:
    """uint64[n] `(cls << 32) | low` for int[n] classes and uint32[n] low halves."""
    key = cls.astype(np.uint64) << _SHIFT
    key |= low
    return key


def _chunks(n: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive `_CHUNK`-sized slices of range(n)."""
    return ((s, min(s + _CHUNK, n)) for s in range(0, n, _CHUNK))


def _sorted_candidate_keys(pred_class, confidence, cand_low) -> np.ndarray:
    """uint64[C] sorted keys of the C candidates (low half <= `cand_low`)."""
    count = sum(
        int(np.count_nonzero(_low_bits(confidence[s:e]) <= cand_low))
        for s, e in _chunks(pred_class.size)
    )
    keys = np.empty(count, np.uint64)
    filled = 0
    for s, e in _chunks(pred_class.size):
        low = _low_bits(confidence[s:e])
        is_cand = low <= cand_low
        k = _keys(pred_class[s:e][is_cand], low[is_cand])
        keys[filled : filled + k.size] = k
        filled += k.size
    keys.sort()  # in place (SIMD quicksort); no argsort needed since the class is in the key
    return keys


# ----------------------------------------------------------------------------- plans


@dataclasses.dataclass(frozen=True, eq=False)
class _Plan:
    """What to keep of each class c (arrays of length K).

    A candidate with key < cut[c] is kept with base[c] copies. One with cut[c] <= key <= last[c]
    is ranked: the ranked candidates of a class are numbered r = 0, 1, ... in index order and
    the first need[c] are kept with base[c] + extra[offset[c] + r] copies. Others are dropped.
    """

    cut: np.ndarray  # uint64[K]
    last: np.ndarray  # uint64[K]
    need: np.ndarray  # int64[K]
    base: np.ndarray  # int64[K]
    extra: np.ndarray  # uint8[sum(need)], each 0 or 1
    offset: np.ndarray  # int64[K], exclusive cumulative sum of need
    total: int  # rows the plan writes


def _make_plan(
    keys: np.ndarray,
    starts: np.ndarray,
    cut: np.ndarray,
    last: np.ndarray,
    need: np.ndarray,
    base: np.ndarray,
    draw: Callable[[int, int], np.ndarray],
    drawn: np.ndarray,
) -> _Plan:
    """Completes a plan; `draw(c, need[c])` gives bool[need[c]] extra copies of each class
    c in `drawn` (int[D], ascending: the draws consume the generator in class order)."""
    offset = np.cumsum(need) - need
    extra = np.zeros(int(need.sum()), np.uint8)
    for c in drawn:
        extra[offset[c] : offset[c] + need[c]] = draw(c, int(need[c]))
    sure = np.searchsorted(keys, cut) - starts[:-1]
    total = int(((sure + need) * base).sum()) + int(extra.sum(dtype=np.int64))
    return _Plan(cut, last, need, base, extra, offset, total)


def _topk_plan(keys, starts, per_class, cand_low, rng) -> _Plan:
    """The paper's rule: per class the per_class most confident, or every candidate repeated."""
    n = np.diff(starts)
    first = np.arange(n.size, dtype=np.uint64) << _SHIFT  # smallest key of each class
    full = n >= per_class
    lo_full = starts[:-1][full]
    threshold = keys[lo_full + per_class - 1]  # key of the per_class-th most confident
    cut, last = first.copy(), first | cand_low  # short classes: rank every candidate
    cut[full] = last[full] = threshold  # full classes: keep keys above it, rank the ties
    need = n.copy()
    need[full] = per_class - (np.searchsorted(keys, threshold) - lo_full)
    base = np.where(full, 1, per_class // np.maximum(n, 1))

    def draw(c: int, count: int) -> np.ndarray:  # per_class mod count extra copies
        chosen = np.zeros(count, bool)
        chosen[rng.choice(count, per_class % count, replace=False)] = True
        return chosen

    short = np.flatnonzero(~full & (n > 0))
    return _make_plan(keys, starts, cut, last, need, base, draw, short)


def _official_plan(keys, starts, per_class, min_confidence, rng) -> _Plan:
    """filter_unlabel.py: per class the highest t = i/100 with >= per_class at or above it."""
    grid = [_ceil_f32(i / 100) for i in range(101) if i / 100 >= min_confidence]
    first = np.arange(starts.size - 1, dtype=np.uint64) << _SHIFT
    bound = first[:, None] | _low_bits(np.array(grid, np.float32))  # uint64[K, G]: key at t
    at_least = np.searchsorted(keys, bound, side="right") - starts[:-1, None]  # int64[K, G]
    pick = np.maximum((at_least >= per_class).sum(axis=1) - 1, 0)  # counts fall as t rises
    classes = np.arange(first.size)
    need = at_least[classes, pick]  # N_c: every candidate >= t_c is ranked and kept
    rate = per_class / np.maximum(need, 1)
    base = np.floor(rate).astype(np.int64) * (need > 0)

    def draw(c: int, count: int) -> np.ndarray:  # Bernoulli of the fractional part
        return rng.random(count) < rate[c] - base[c]

    last = bound[classes, pick]
    return _make_plan(keys, starts, first, last, need, base, draw, np.flatnonzero(need))


# ----------------------------------------------------------------------------- the pass


def _rank_in_class(cls: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """int64[n]: for intp[n] classes (n < 2**32), how many earlier elements share the class,
    counting `seen[class]` (int64[K]) from earlier calls; adds this call's counts to `seen`.
    O(n log n) and nothing O(K), as it runs once per chunk."""
    order = (cls.astype(np.uint64) << _SHIFT) | np.arange(cls.size, dtype=np.uint64)
    order.sort()  # by class, then position: keys are unique, so the fast sort is stable
    sorted_cls = (order >> _SHIFT).astype(np.intp)
    step = np.arange(cls.size)
    new_class = np.ones(cls.size, bool)
    new_class[1:] = sorted_cls[1:] != sorted_cls[:-1]
    first_of_class = np.maximum.accumulate(np.where(new_class, step, 0))
    rank = np.empty(cls.size, np.int64)
    rank[(order & _LOW).astype(np.intp)] = step - first_of_class + seen[sorted_cls]
    np.add.at(seen, cls, 1)
    return rank


def _select(pred_class, confidence, plan: _Plan):
    """One chunked pass writing the plan's rows in index order. Returns indices (int64[M]),
    kept_unique and copies (int64[K]) and lowest_confidence_kept (float32[K], NaN if none)."""
    num_classes = plan.need.size
    out = np.empty(plan.total, np.int64)
    seen, copies, kept = (np.zeros(num_classes, np.int64) for _ in range(3))
    worst = np.zeros(num_classes, np.uint64)  # largest key kept = lowest confidence kept
    written = 0
    for s, e in _chunks(pred_class.size):
        cls = pred_class[s:e]
        key = _keys(cls, _low_bits(confidence[s:e]))
        pos = np.flatnonzero(key <= plan.last[cls])
        cls, key = cls[pos].astype(np.intp, copy=False), key[pos]
        n = plan.base[cls]
        ranked = np.flatnonzero(key >= plan.cut[cls])
        if ranked.size:
            rcls = cls[ranked]
            r = _rank_in_class(rcls, seen)
            ok = r < plan.need[rcls]
            n[ranked] = 0
            rcls, r = rcls[ok], r[ok]
            n[ranked[ok]] = plan.base[rcls] + plan.extra[plan.offset[rcls] + r]
        rows = np.repeat(pos + s, n)
        out[written : written + rows.size] = rows
        written += rows.size
        np.add.at(copies, cls, n)
        hit = n > 0
        np.add.at(kept, cls[hit], 1)
        np.maximum.at(worst, cls[hit], key[hit])
    assert written == plan.total, (written, plan.total)
    lowest = (_ONE_BITS - (worst & _LOW).astype(np.uint32)).view(np.float32)
    return out, kept, copies, np.where(kept > 0, lowest, np.float32(np.nan))
