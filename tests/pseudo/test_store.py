"""Tests for nsjax.pseudo._store: the rebuild against the float64 softmax at any temperature,
what is kept per image, the threshold, take / concatenate / save / load bitwise, the file
checks, and argument errors."""

from __future__ import annotations

import os
import pickle
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsjax.balance import balance_classes
from nsjax.pseudo import _store
from nsjax.pseudo._store import PseudoLabels, concatenate, from_logits, load, save

SETTINGS = settings(deadline=None, max_examples=30)
F16_REL = 2.0**-11  # float16 rounding: relative error of a stored log-probability
TEMPERATURES = st.sampled_from([0.25, 0.5, 1.0, 1.7, 4.0])
ID = "n01440764/n01440764_10026.JPEG"

# ----------------------------------------------------------------------------- references


def log_softmax64(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, np.float64)
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax64(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return np.exp(log_softmax64(np.asarray(logits, np.float64) / temperature))


def random_logits(seed: int, n: int, c: int, scale: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = scale * rng.normal(size=(n, c))
    x[np.arange(n), rng.integers(0, c, n)] += rng.uniform(0, 10, n)  # a peak, as a teacher's
    return x.astype(np.float32)


def make(logits: np.ndarray, top_k: int) -> PseudoLabels:
    n = logits.shape[0]
    return from_logits(logits, index=np.arange(n) * 7, ids=[f"img{i}" for i in range(n)],
                       top_k=top_k)  # fmt: skip


def assert_same(a: PseudoLabels, b: PseudoLabels) -> None:
    """Bitwise equal, dtypes included (ids: both str, of any width; a file keeps their
    UTF-8 bytes, not NumPy's padding width)."""
    assert a.num_classes == b.num_classes
    for name in _store._ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        same_dtype = x.dtype.kind == y.dtype.kind == "U" if name == "ids" else x.dtype == y.dtype
        assert same_dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)


sizes = st.tuples(st.integers(1, 6), st.integers(1, 40)).flatmap(
    lambda nc: st.tuples(st.just(nc[0]), st.just(nc[1]), st.integers(1, nc[1])))


# ----------------------------------------------------------------------------- the rebuild


def assert_kept_ratios(labels: PseudoLabels, logits, temperature: float, soft) -> None:
    """Over the kept classes, q_i / q_top = exp((l_i - l_top) / T) to float16 rounding."""
    log_p = log_softmax64(logits)
    top = labels.top_classes.astype(np.intp)
    q = np.take_along_axis(soft.astype(np.float64), top, axis=1)
    lp = np.take_along_axis(log_p, top, axis=1)
    want = (lp - lp[:, :1]) / temperature
    tol = F16_REL * (np.abs(lp) + np.abs(lp[:, :1])) / temperature + 1e-6
    visible = q > 1e-30  # float32 keeps log(q) to 1e-7 above this
    got = np.log(np.where(visible, q, 1.0)) - np.log(q[:, :1])
    assert np.all(np.abs(got - want)[visible] <= tol[visible])
    assert np.all(visible | (want < np.log(1e-28)))  # only truly tiny entries may underflow


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6), c=st.integers(1, 40),
       temperature=TEMPERATURES)  # fmt: skip
def test_full_k_rebuilds_the_softmax_at_any_temperature(seed, n, c, temperature):
    logits = random_logits(seed, n, c)
    labels = make(logits, c)
    q = labels.soft_labels(temperature)
    assert q.dtype == np.float32 and q.shape == (n, c)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)
    assert_kept_ratios(labels, logits, temperature, q)  # every class is kept: all of q
    # the official offline rule: stored probabilities p -> p^(1/T), renormalised
    p = softmax64(logits) ** (1 / temperature)
    rel = np.exp(2 * F16_REL * np.abs(log_softmax64(logits)).max() / temperature) - 1
    np.testing.assert_allclose(q, p / p.sum(axis=1, keepdims=True), rtol=2 * rel + 1e-5,
                               atol=1e-7)  # fmt: skip


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), nck=sizes, temperature=TEMPERATURES)
def test_top_k_rebuild_keeps_ratios_and_splits_the_rest_equally(seed, nck, temperature):
    n, c, k = nck
    logits = random_logits(seed, n, c)
    labels = make(logits, k)
    q = labels.soft_labels(temperature).astype(np.float64)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)
    assert_kept_ratios(labels, logits, temperature, q)
    if k == c:
        return
    others = np.ones((n, c), bool)
    np.put_along_axis(others, labels.top_classes.astype(np.intp), False, axis=1)
    tail = q[others].reshape(n, c - k)
    np.testing.assert_array_equal(tail, np.repeat(tail[:, :1], c - k, axis=1))  # equal split
    # each other class has log-probability r = log(rest / (C - k)) at T = 1, exp(r / T) at T
    rest = np.maximum(1 - np.exp(labels.top_log_probs.astype(np.float64)).sum(axis=1), 0)
    top = q[np.arange(n), labels.classes]
    lp_top = labels.top_log_probs[:, 0].astype(np.float64)
    with np.errstate(divide="ignore"):
        want = np.exp((np.log(rest / (c - k)) - lp_top) / temperature) * top
    np.testing.assert_allclose(tail[:, 0], want, rtol=1e-5, atol=1e-30)
    if temperature == 1.0:
        np.testing.assert_allclose(tail.sum(axis=1), rest, rtol=1e-5, atol=1e-7)


def test_rest_rounded_below_zero_is_clamped():
    """Float16 rounding of the kept log-probs can make them sum past 1 when little is left;
    the other classes then get 0, never a negative or NaN probability."""
    labels = make(random_logits(0, 256, 10), 9)
    rest = 1 - np.exp(labels.top_log_probs.astype(np.float64)).sum(axis=1)
    assert (rest < 0).any()  # the case under test occurs
    for temperature in (0.5, 1.0, 3.0):
        q = labels.soft_labels(temperature)
        assert np.isfinite(q).all() and (q >= 0).all()
        others = np.ones(q.shape, bool)
        np.put_along_axis(others, labels.top_classes.astype(np.intp), False, axis=1)
        assert (q[others][rest < 0] == 0).all() and (q[others][rest > 0] > 0).all()
        np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)


def test_soft_labels_of_rows_and_empty():
    labels = make(random_logits(0, 5, 9), 3)
    np.testing.assert_array_equal(labels.soft_labels(2.0, rows=[4, 0, 4]),
                                  labels.soft_labels(2.0)[[4, 0, 4]])  # fmt: skip
    assert labels.soft_labels(rows=[]).shape == (0, 9)
    empty = make(np.zeros((0, 9), np.float32), 3)
    assert len(empty) == 0 and empty.soft_labels(0.5).shape == (0, 9)


def test_small_temperatures_and_huge_spreads_stay_finite():
    logits = np.array([[0.0, -1e5, -3.0], [-7.0, -7.0, -7.5]], np.float32)
    labels = make(logits, 3)
    assert np.isfinite(labels.top_log_probs).all()  # -1e5 kept as float16's lowest
    q = labels.soft_labels(0.01)
    np.testing.assert_allclose(q, [[1, 0, 0], [0.5, 0.5, 0]], atol=1e-6)
    uniform = make(np.zeros((1, 10000), np.float32), 10000)  # rounding leaves rest ~ 6e-4
    np.testing.assert_allclose(uniform.soft_labels(1e-3), 1e-4, rtol=1e-5)
    # one class left out: its r = log(rest) > the kept log-probs, by rounding alone
    q = make(np.zeros((1, 10000), np.float32), 9999).soft_labels(1e-3)
    assert np.isfinite(q).all()
    np.testing.assert_allclose(q.sum(), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------- what is kept


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), nck=sizes, ties=st.booleans())
def test_kept_values_are_the_float64_top_k(seed, nck, ties):
    n, c, k = nck
    if ties:  # few distinct logits: equal values, ranked by lower class first
        logits = np.random.default_rng(seed).integers(0, 3, (n, c)).astype(np.float32)
    else:
        logits = random_logits(seed, n, c)
    labels = make(logits, k)
    log_p = log_softmax64(logits)
    order = np.argsort(-log_p, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(labels.top_classes, order)
    np.testing.assert_array_equal(labels.top_log_probs,
                                  np.take_along_axis(log_p, order, axis=1).astype(np.float16))
    np.testing.assert_array_equal(labels.classes, np.argmax(logits, axis=1))
    np.testing.assert_array_equal(labels.confidence,
                                  softmax64(logits).max(axis=1).astype(np.float32))
    np.testing.assert_array_equal(labels.hard_labels(), labels.classes)
    assert labels.classes.dtype == np.int32 and labels.confidence.dtype == np.float32
    assert labels.top_classes.dtype == np.int16 and labels.top_log_probs.dtype == np.float16
    assert labels.index.dtype == np.int64 and labels.ids.dtype.kind == "U"
    assert labels.top_k == k and len(labels) == n and labels.num_classes == c


def test_confident_compares_as_float64_like_balance():
    conf = np.float32(0.3)  # 0.30000001192..., just above 0.3
    above = float(conf) + 1e-12  # rounds to conf in float32: a float32 comparison keeps conf
    labels = make(random_logits(1, 200, 4, scale=0.5), 2)
    labels = dataclass_replace(labels, confidence=np.where(np.arange(200) % 2 == 0, conf,
                                                           labels.confidence))  # fmt: skip
    assert np.float32(above) == conf
    assert labels.confident(float(conf))[::2].all()  # equal is kept
    assert not labels.confident(above)[::2].any()
    for t in (0.0, 0.3, float(conf), above, 0.5, 1.0):
        kept = labels.confident(t)
        np.testing.assert_array_equal(kept, labels.confidence.astype(np.float64) >= t)
        result = balance_classes(labels.classes, labels.confidence, per_class=5,
                                 min_confidence=t, num_classes=4)  # fmt: skip
        assert int(result.candidates.sum()) == int(kept.sum())
    assert labels.confident().dtype == np.bool_


def dataclass_replace(labels: PseudoLabels, **changes) -> PseudoLabels:
    fields = {name: getattr(labels, name) for name in _store._ARRAYS}
    return PseudoLabels(**{**fields, **changes}, num_classes=labels.num_classes)


def test_jax_inputs_are_accepted():
    logits = random_logits(3, 4, 12)
    want = make(logits, 5)
    assert_same(from_logits(jnp.asarray(logits), index=jnp.arange(4) * 7,
                            ids=[f"img{i}" for i in range(4)], top_k=5), want)  # fmt: skip
    low = jnp.asarray(logits, jnp.bfloat16)
    assert_same(make(low, 5), make(np.asarray(low.astype(jnp.float32)), 5))


@pytest.mark.parametrize("c, dtype", [(32767, np.int16), (32768, np.int32), (40000, np.int32)])
def test_many_classes_use_int32_classes(c, dtype):
    logits = np.zeros((2, c), np.float32)
    logits[0, c - 1] = logits[1, 5] = 9.0
    labels = make(logits, 3)
    assert labels.top_classes.dtype == dtype
    np.testing.assert_array_equal(labels.top_classes[:, 0], [c - 1, 5])
    np.testing.assert_array_equal(labels.classes, [c - 1, 5])


def test_bytes_per_image():
    logits = random_logits(0, 3, 1000)
    ids = [ID] * 3
    for k, want in ((1, 50), (5, 66), (10, 86), (20, 126)):  # the id: 30 B of UTF-8
        assert from_logits(logits, index=[0, 1, 2], ids=ids, top_k=k).bytes_per_image() == want
    big = from_logits(np.zeros((1, 40000)), index=[0], ids=[ID], top_k=5)
    assert big.bytes_per_image() == 8 + 30 + 4 + 4 + 5 * (4 + 2)


# ----------------------------------------------------------------------------- take, join, files


def test_take_and_concatenate_are_bitwise():
    labels = make(random_logits(4, 10, 7), 3)
    assert_same(labels.take(np.arange(10)), labels)
    part = labels.take([9, 2, 2])
    np.testing.assert_array_equal(part.index, labels.index[[9, 2, 2]])
    np.testing.assert_array_equal(part.soft_labels(0.5), labels.soft_labels(0.5, rows=[9, 2, 2]))
    whole = concatenate([labels.take(range(0, 4)), labels.take([]), labels.take(range(4, 10))])
    assert_same(whole, labels)
    long_ids = from_logits(np.zeros((1, 7)), index=[3], ids=["a-much-longer-id"], top_k=3)
    assert concatenate([labels, long_ids]).ids[-1] == "a-much-longer-id"


def test_save_load_round_trip_is_bitwise(tmp_path):
    for c, k in ((7, 3), (40000, 2)):
        labels = make(random_logits(5, 6, c), k)
        path = tmp_path / f"shard-{c}"  # no suffix: the file is the path as given
        save(path, labels)
        assert os.listdir(tmp_path).count(f"shard-{c}") == 1
        with zipfile.ZipFile(path) as z:  # uncompressed, so that a reader may map it
            assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
        assert_same(load(path), labels)
    empty = make(np.zeros((0, 4), np.float32), 2)
    save(tmp_path / "empty.npz", empty)
    assert_same(load(tmp_path / "empty.npz"), empty)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "labels.npz"
    old = make(random_logits(6, 3, 5), 2)
    save(path, old)

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save(path, make(random_logits(7, 4, 5), 2))
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path / "new.npz", old)
    assert sorted(os.listdir(tmp_path)) == ["labels.npz"]  # no temporary file, no new file
    monkeypatch.undo()
    assert_same(load(path), old)


def write_npz(path, labels: PseudoLabels, **changes) -> None:
    arrays = _store._to_disk(labels)
    arrays.update(format=np.str_(_store.FORMAT), version=np.int64(_store.VERSION),
                  num_classes=np.int64(labels.num_classes))  # fmt: skip
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


@pytest.mark.parametrize("changes, error, match", [
    (dict(version=np.int64(0)), ValueError, "version 0"),
    (dict(version=np.int64(2)), ValueError, "version 2"),
    (dict(format=np.str_("something-else")), ValueError, "not a pseudo-label store"),
    (dict(format=None), ValueError, "missing \\['format'\\]"),
    (dict(top_log_probs=None), ValueError, "missing \\['top_log_probs'\\]"),
    (dict(top_log_probs=np.zeros((3, 2), np.float32)), TypeError, "top_log_probs.*float16"),
    (dict(top_classes=np.zeros((3, 2), np.int32)), TypeError, "top_classes.*int16"),
    (dict(classes=np.zeros(4, np.int32)), ValueError, "classes must have shape"),
    (dict(num_classes=np.int64(2)), ValueError, "k in \\[1, 2\\]"),
    (dict(classes=np.full(3, 5, np.int32)), ValueError, "classes must be in \\[0, 4\\]"),
    (dict(ids=np.arange(3)), ValueError, "ids must be UTF-8 bytes"),
    (dict(ids=np.array(["a", "b", "c"])), ValueError, "ids must be UTF-8 bytes"),
])  # fmt: skip
def test_load_refuses_a_bad_file_naming_it(tmp_path, changes, error, match):
    path = tmp_path / "bad.npz"
    write_npz(path, make(random_logits(8, 3, 5), 3), **changes)
    with pytest.raises(error, match=match) as info:
        load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"not a zip file", b""])
def test_load_refuses_a_file_that_is_not_npz(tmp_path, content):
    path = tmp_path / "junk.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"{path}.*not a pseudo-label store"):
        load(path)


def test_load_refuses_an_npy_file_and_reports_a_missing_one(tmp_path):
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(ValueError, match="array.npy.*not a pseudo-label store"):
        load(tmp_path / "array.npy")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load(tmp_path / "missing.npz")


# ----------------------------------------------------------------------------- argument errors

LOGITS = random_logits(9, 3, 5)
GOOD = dict(index=[0, 1, 2], ids=["a", "b", "c"], top_k=2)


@pytest.mark.parametrize("logits, changes, error, match", [
    (LOGITS[0], {}, ValueError, "logits must have shape \\[n, C\\]"),
    (LOGITS.astype(np.int32), {}, TypeError, "logits must have a floating dtype"),
    (np.zeros((3, 0), np.float32), {}, ValueError, "logits must have at least one class"),
    (np.where(np.eye(3, 5) > 0, np.nan, LOGITS), {}, ValueError, "logits must be finite"),
    (np.where(np.eye(3, 5) > 0, np.inf, LOGITS), {}, ValueError, "logits must be finite"),
    (LOGITS, dict(top_k=0), ValueError, "top_k must be >= 1, got 0"),
    (LOGITS, dict(top_k=6), ValueError, "top_k must be in \\[1, C\\] = \\[1, 5\\], got 6"),
    (LOGITS, dict(top_k=2.0), TypeError, "top_k must be an int"),
    (LOGITS, dict(index=[0, 1]), ValueError, "index must have shape \\[n\\] = \\(3,\\)"),
    (LOGITS, dict(index=[0.0, 1.0, 2.0]), TypeError, "index must have an integer dtype"),
    (LOGITS, dict(index=[0, -1, 2]), ValueError, "index must be in \\[0, "),
    (LOGITS, dict(ids=["a", "b"]), ValueError, "ids must have shape \\[n\\] = \\(3,\\)"),
    (LOGITS, dict(ids=[1, 2, 3]), TypeError, "ids must be strings"),
    (LOGITS, dict(ids=[["a", "b", "c"]]), ValueError, "ids must have shape"),
])  # fmt: skip
def test_from_logits_refuses_bad_arguments(logits, changes, error, match):
    with pytest.raises(error, match=match):
        from_logits(logits, **{**GOOD, **changes})


@pytest.mark.parametrize("call, error, match", [
    (lambda s: s.soft_labels(0.0), ValueError, "temperature must be > 0, got 0.0"),
    (lambda s: s.soft_labels(-1), ValueError, "temperature must be > 0, got -1.0"),
    (lambda s: s.soft_labels(float("inf")), ValueError, "temperature must be > 0 and finite"),
    (lambda s: s.soft_labels(float("nan")), ValueError, "temperature must be > 0"),
    (lambda s: s.soft_labels("1"), TypeError, "temperature must be a number"),
    (lambda s: s.soft_labels(1.0, rows=[0, 3]), ValueError, "rows must be in \\[0, 3\\), got"),
    (lambda s: s.soft_labels(1.0, rows=[-1]), ValueError, "rows must be in \\[0, 3\\)"),
    (lambda s: s.soft_labels(1.0, rows=[0.0]), TypeError, "rows must have an integer dtype"),
    (lambda s: s.soft_labels(1.0, rows=[[0]]), ValueError, "rows must have shape \\[n\\]"),
    (lambda s: s.take([3]), ValueError, "rows must be in \\[0, 3\\)"),
    (lambda s: s.confident(1.5), ValueError, "threshold must be in \\[0, 1\\], got 1.5"),
    (lambda s: concatenate([]), TypeError, "parts must be a non-empty sequence"),
    (lambda s: concatenate([s, s.index]), TypeError, "parts must be a non-empty sequence"),
    (lambda s: concatenate([s, make(LOGITS, 3)]), ValueError, "parts\\[1\\] has \\(5, 3\\)"),
    (lambda s: save("x.npz", s.index), TypeError, "labels must be a PseudoLabels"),
])  # fmt: skip
def test_methods_refuse_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call(from_logits(LOGITS, **GOOD))


@pytest.mark.parametrize("changes, error, match", [
    (dict(index=np.arange(3, dtype=np.int32)), TypeError, "index must have dtype int64"),
    (dict(index=[0, 1, 2]), TypeError, "index must be a NumPy array, got list"),
    (dict(ids=np.array([b"a", b"b", b"c"])), TypeError, "ids must be a NumPy str"),
    (dict(confidence=np.ones(2, np.float32)), ValueError, "confidence must have shape"),
    (dict(confidence=np.full(3, 1.5, np.float32)), ValueError, "confidence must be in"),
    (dict(top_log_probs=np.full((3, 2), np.nan, np.float16)), ValueError, "top_log_probs"),
    (dict(top_log_probs=np.ones((3, 2), np.float16)), ValueError, "top_log_probs must be in"),
    (dict(top_classes=np.full((3, 2), 5, np.int16)), ValueError, "top_classes must be in"),
    (dict(num_classes=0), ValueError, "num_classes must be >= 1"),
])  # fmt: skip
def test_constructor_checks_every_field(changes, error, match):
    labels = from_logits(LOGITS, **GOOD)
    fields = {name: getattr(labels, name) for name in _store._ARRAYS}
    fields["num_classes"] = labels.num_classes
    with pytest.raises(error, match=match):
        PseudoLabels(**{**fields, **changes})


def test_ids_are_stored_as_utf8_and_read_back_as_str(tmp_path):
    ids = ["ünïcode/ß.jpg", "plain.png", "日本/猫.webp"]
    labels = from_logits(np.zeros((3, 4)), index=[0, 1, 2], ids=ids, top_k=2)
    save(tmp_path / "s.npz", labels)
    with np.load(tmp_path / "s.npz") as raw:
        assert raw["ids"].dtype.kind == "S"
    back = load(tmp_path / "s.npz")
    assert back.ids.dtype.kind == "U" and back.ids.tolist() == ids


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), temperature=st.floats(0.25, 4.0))
def test_targets_view_rebuilds_the_soft_labels_per_batch(seed, temperature):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (12, 7))
    store = from_logits(logits, index=np.arange(12), ids=[f"i{j}" for j in range(12)], top_k=3)
    rows = rng.integers(0, 12, 9)
    view = store.targets(rows, temperature=temperature)
    assert view.shape == (9, 7) and len(view) == 9 and view.dtype == np.float32
    picks = rng.integers(0, 9, 5)
    np.testing.assert_array_equal(view[picks], store.soft_labels(temperature, rows=rows[picks]))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(view))[picks], view[picks])
    np.testing.assert_array_equal(store.targets(rows, hard=True), store.hard_labels()[rows])
