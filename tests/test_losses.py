"""nsjax.losses against float64 NumPy, plus the invariants of cross entropy."""

import chex
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from hypothesis import given, settings

from nsjax import losses

SETTINGS = settings(deadline=None, max_examples=25)


def _np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_soft_ce(z, t, s=0.0):
    t = np.asarray(t, np.float64)
    t = (1 - s) * t + s / t.shape[-1]
    return -(t * _np_log_softmax(z)).sum(-1)


@st.composite
def logits_and_targets(draw, dtype=np.float32):
    b, c = draw(st.integers(1, 6)), draw(st.integers(2, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 100.0]))
    logits = (rng.normal(size=(b, c)) * scale).astype(dtype)
    targets = rng.dirichlet(np.ones(c), size=b).astype(np.float32)
    return logits, targets


@SETTINGS
@given(logits_and_targets(), st.sampled_from([0.0, 0.1, 0.5]))
def test_soft_ce_matches_float64_reference(lt, s):
    logits, targets = lt
    got = losses.soft_cross_entropy(logits, targets, label_smoothing=s)
    chex.assert_shape(got, (logits.shape[0],))
    chex.assert_type(got, jnp.float32)
    np.testing.assert_allclose(got, _np_soft_ce(logits, targets, s), rtol=2e-5, atol=2e-4)
    assert np.all(np.asarray(got) >= -1e-5)  # CE >= entropy >= 0


@SETTINGS
@given(logits_and_targets())
def test_soft_ce_gradient_is_softmax_minus_targets(lt):
    logits, targets = lt
    grad = jax.grad(lambda z: losses.soft_cross_entropy(z, targets).sum())(logits)
    expected = np.exp(_np_log_softmax(logits)) - targets
    np.testing.assert_allclose(grad, expected, atol=2e-6)


@SETTINGS
@given(logits_and_targets())
def test_soft_ce_equals_entropy_when_logits_reproduce_targets(lt):
    _, targets = lt
    targets = np.clip(targets, 1e-6, None)
    targets = targets / targets.sum(-1, keepdims=True)
    got = losses.soft_cross_entropy(np.log(targets), targets)
    entropy = -(targets.astype(np.float64) * np.log(targets.astype(np.float64))).sum(-1)
    np.testing.assert_allclose(got, entropy, rtol=1e-5, atol=1e-5)


@SETTINGS
@given(logits_and_targets(), st.sampled_from([0.0, 0.1]))
def test_hard_ce_equals_soft_ce_on_one_hot(lt, s):
    logits, _ = lt
    labels = np.arange(logits.shape[0]) % logits.shape[1]
    one_hot = np.eye(logits.shape[1], dtype=np.float32)[labels]
    hard = losses.hard_cross_entropy(logits, labels, label_smoothing=s)
    soft = losses.soft_cross_entropy(logits, one_hot, label_smoothing=s)
    np.testing.assert_allclose(hard, soft, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(hard, _np_soft_ce(logits, one_hot, s), rtol=2e-5, atol=2e-4)


def test_bfloat16_logits_compute_in_float32():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(4, 7)) * 30, jnp.bfloat16)
    targets = rng.dirichlet(np.ones(7), size=4).astype(np.float32)
    got = losses.soft_cross_entropy(logits, targets)
    chex.assert_type(got, jnp.float32)
    np.testing.assert_allclose(got, _np_soft_ce(np.asarray(logits, np.float32), targets), rtol=1e-5)


def test_extreme_logits_stay_finite():
    logits = np.array([[1e4, -1e4, 0.0], [80.0, -90.0, 85.0]], np.float32)
    targets = np.full((2, 3), 1 / 3, np.float32)
    got = losses.soft_cross_entropy(logits, targets)
    chex.assert_tree_all_finite(got)
    chex.assert_tree_all_finite(jax.grad(lambda z: losses.soft_cross_entropy(z, targets).sum())(logits))
    np.testing.assert_allclose(got, _np_soft_ce(logits, targets), rtol=1e-6)


def test_where_zeroes_masked_examples_and_their_gradient():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(5, 4)).astype(np.float32)
    targets = rng.dirichlet(np.ones(4), size=5).astype(np.float32)
    where = np.array([True, False, True, False, True])
    got = losses.soft_cross_entropy(logits, targets, where=where)
    full = losses.soft_cross_entropy(logits, targets)
    np.testing.assert_allclose(got, np.where(where, full, 0.0))
    grad = jax.grad(lambda z: losses.soft_cross_entropy(z, targets, where=where).sum())(logits)
    assert np.all(np.asarray(grad)[~where] == 0)


def test_soft_ce_agrees_with_optax():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(8, 10)).astype(np.float32)
    targets = rng.dirichlet(np.ones(10), size=8).astype(np.float32)
    np.testing.assert_allclose(
        losses.soft_cross_entropy(logits, targets, label_smoothing=0.1),
        optax.softmax_cross_entropy(logits, optax.smooth_labels(targets, 0.1)),
        rtol=1e-6,
    )


class JitTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_equals_no_jit(self):
        rng = np.random.default_rng(3)
        logits = rng.normal(size=(6, 9)).astype(np.float32)
        targets = rng.dirichlet(np.ones(9), size=6).astype(np.float32)
        labels = rng.integers(0, 9, 6)
        fn = self.variant(
            lambda z, t, y: (
                losses.soft_cross_entropy(z, t, label_smoothing=0.1),
                losses.hard_cross_entropy(z, y, label_smoothing=0.1),
                losses.pseudo_labels(z, temperature=2.0),
                losses.noisy_student_loss(z, y, z, t, unlabeled_ratio=3.0),
            )
        )
        got = fn(logits, targets, labels)
        want = (
            _np_soft_ce(logits, targets, 0.1),
            _np_soft_ce(logits, np.eye(9)[labels], 0.1),
            np.exp(_np_log_softmax(logits / 2.0)),
            _np_soft_ce(logits, np.eye(9)[labels], 0.1).mean() + 3.0 * _np_soft_ce(logits, targets).mean(),
        )
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6)


@SETTINGS
@given(logits_and_targets(), st.sampled_from([0.25, 1.0, 4.0]))
def test_pseudo_labels_soft_and_hard(lt, temperature):
    logits, _ = lt
    soft = losses.pseudo_labels(logits, temperature=temperature)
    chex.assert_type(soft, jnp.float32)
    np.testing.assert_allclose(np.asarray(soft).sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(soft, np.exp(_np_log_softmax(logits / temperature)), atol=1e-6)
    hard = np.asarray(losses.pseudo_labels(logits, hard=True))
    assert set(np.unique(hard)) <= {0.0, 1.0}
    np.testing.assert_array_equal(hard.argmax(-1), logits.argmax(-1))
    np.testing.assert_array_equal(hard.sum(-1), 1.0)


def test_noisy_student_loss_equals_official_sum_over_labeled_batch_size():
    """mean_l + ratio * mean_u == (sum_l + sum_u) / B_l when B_u = ratio * B_l."""
    rng = np.random.default_rng(4)
    b_l, ratio, c = 4, 3, 6
    zl = rng.normal(size=(b_l, c)).astype(np.float32)
    zu = rng.normal(size=(b_l * ratio, c)).astype(np.float32)
    y = rng.integers(0, c, b_l)
    t = rng.dirichlet(np.ones(c), size=b_l * ratio).astype(np.float32)
    got = losses.noisy_student_loss(zl, y, zu, t, unlabeled_ratio=ratio)
    official = (_np_soft_ce(zl, np.eye(c)[y], 0.1).sum() + _np_soft_ce(zu, t).sum()) / b_l
    np.testing.assert_allclose(got, official, rtol=1e-5)
    chex.assert_shape(got, ())
    smoothed = losses.noisy_student_loss(zl, y, zu, t, unlabeled_ratio=ratio, unlabeled_label_smoothing=0.1)
    want = _np_soft_ce(zl, np.eye(c)[y], 0.1).mean() + ratio * _np_soft_ce(zu, t, 0.1).mean()
    np.testing.assert_allclose(smoothed, want, rtol=1e-5)


Z = np.zeros((2, 3), np.float32)
T = np.full((2, 3), 1 / 3, np.float32)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: losses.soft_cross_entropy(Z[0], T[0]), ValueError, r"logits must have shape \[B, C\]"),
        (lambda: losses.soft_cross_entropy(Z, T[:1]), ValueError, "logits and targets"),
        (lambda: losses.soft_cross_entropy(Z.astype(int), T), TypeError, "logits must have a floating"),
        (lambda: losses.soft_cross_entropy(Z, T, label_smoothing=1.0), ValueError, "label_smoothing"),
        (lambda: losses.soft_cross_entropy(Z, T, where=np.ones(2)), TypeError, "where"),
        (lambda: losses.soft_cross_entropy(Z, T, where=np.ones(3, bool)), ValueError, "where"),
        (lambda: losses.hard_cross_entropy(Z, np.zeros(2, np.float32)), TypeError, "labels"),
        (lambda: losses.hard_cross_entropy(Z, np.zeros(3, int)), ValueError, "labels and logits"),
        (lambda: losses.pseudo_labels(Z, temperature=0.0), ValueError, "temperature must be > 0"),
        (lambda: losses.pseudo_labels(Z, temperature=np.nan), ValueError, "temperature must be > 0"),
        (lambda: losses.pseudo_labels(Z, temperature="1"), TypeError, "temperature must be a number"),
        (lambda: losses.pseudo_labels(Z, temperature=np.ones(2)), ValueError, "temperature must be a scalar"),
        (lambda: losses.pseudo_labels(Z, hard=1), TypeError, "hard must be a bool"),
        (lambda: losses.soft_cross_entropy(Z, T, label_smoothing=np.nan), ValueError, "label_smoothing"),
        (lambda: losses.noisy_student_loss(Z, np.zeros(2, int), Z, T, unlabeled_ratio=np.nan), ValueError, "unlabeled_ratio"),
        (lambda: losses.noisy_student_loss(Z, np.zeros(2, int), Z, T, unlabeled_ratio=-1), ValueError, "unlabeled_ratio"),
        (lambda: losses.noisy_student_loss(Z, np.zeros(2, int), np.zeros((2, 4), np.float32), T, unlabeled_ratio=1), ValueError, "student_logits_labeled and student_logits_unlabeled"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------------- no silent wrong result


@pytest.mark.parametrize("bad", [3, -1, 100])
@pytest.mark.parametrize("to_array", [np.asarray, jnp.asarray])
def test_concrete_label_outside_the_classes_is_an_error(bad, to_array):
    labels = to_array(np.array([0, bad]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\).*got 1 outside, e.g. " + str(bad)):
        losses.hard_cross_entropy(Z, labels)


@pytest.mark.parametrize("bad", [3, -1])
def test_traced_label_outside_the_classes_gives_nan_not_another_class(bad):
    logits = np.random.default_rng(5).normal(size=(3, 3)).astype(np.float32)
    labels = np.array([0, bad, 2])
    got = np.asarray(jax.jit(losses.hard_cross_entropy)(logits, labels))
    assert np.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2]], _np_soft_ce(logits[[0, 2]], np.eye(3)[[0, 2]]), rtol=1e-5)
    # in noisy_student_loss the NaN reaches the scalar
    total = jax.jit(lambda y: losses.noisy_student_loss(logits, y, logits, T[:1].repeat(3, 0),
                                                       unlabeled_ratio=1.0))(labels)
    assert np.isnan(total)


BAD_TARGETS = {
    "sums to 1.5": np.array([[0.5, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]], np.float32),
    "negative": np.array([[1.2, -0.2, 0.0], [1 / 3, 1 / 3, 1 / 3]], np.float32),
    "sums to 0": np.array([[0.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]], np.float32),
    "NaN": np.array([[np.nan, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]], np.float32),
}


@pytest.mark.parametrize("name", list(BAD_TARGETS))
def test_concrete_bad_target_row_is_an_error(name):
    with pytest.raises(ValueError, match="targets must hold probability rows.*1 rows do not, e.g. row 0"):
        losses.soft_cross_entropy(Z, jnp.asarray(BAD_TARGETS[name]))


@pytest.mark.parametrize("name", list(BAD_TARGETS))
def test_traced_bad_target_row_gives_nan(name):
    got = np.asarray(jax.jit(losses.soft_cross_entropy)(Z, BAD_TARGETS[name]))
    assert np.isnan(got[0]) and np.isfinite(got[1])


def test_rows_masked_by_where_are_not_checked_and_give_zero():
    targets = np.array([[0.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]], np.float32)  # padding row 0
    where = np.array([False, True])
    for fn in (losses.soft_cross_entropy, jax.jit(losses.soft_cross_entropy)):
        got = np.asarray(fn(Z, targets, where=where))
        np.testing.assert_allclose(got, [0.0, np.log(3)], rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, np.float32])
def test_low_precision_normalised_targets_are_accepted(dtype):
    rng = np.random.default_rng(6)
    targets = jnp.asarray(rng.dirichlet(np.ones(1000), size=4), dtype)
    got = losses.soft_cross_entropy(np.zeros((4, 1000), np.float32), targets)
    assert np.all(np.isfinite(got))


NUMBERS = [np.float32(0.5), np.float64(0.5), np.asarray(0.5), jnp.asarray(0.5)]


@pytest.mark.parametrize("value", NUMBERS, ids=lambda v: type(v).__name__)
def test_numpy_and_0d_values_are_numbers(value):
    logits = np.random.default_rng(7).normal(size=(2, 3)).astype(np.float32)
    np.testing.assert_array_equal(losses.pseudo_labels(logits, temperature=value),
                                  losses.pseudo_labels(logits, temperature=0.5))
    y = np.array([0, 2])
    np.testing.assert_array_equal(
        losses.noisy_student_loss(logits, y, logits, T, unlabeled_ratio=value),
        losses.noisy_student_loss(logits, y, logits, T, unlabeled_ratio=0.5))
    np.testing.assert_array_equal(losses.soft_cross_entropy(logits, T, label_smoothing=value),
                                  losses.soft_cross_entropy(logits, T, label_smoothing=0.5))


def test_traced_scalars_work_and_give_nan_outside_their_range():
    logits = np.random.default_rng(8).normal(size=(2, 3)).astype(np.float32)
    y = np.array([0, 2])
    pl = jax.jit(lambda t: losses.pseudo_labels(logits, temperature=t))
    ns = jax.jit(lambda r: losses.noisy_student_loss(logits, y, logits, T, unlabeled_ratio=r))
    sc = jax.jit(lambda s: losses.soft_cross_entropy(logits, T, label_smoothing=s))
    hc = jax.jit(lambda s: losses.hard_cross_entropy(logits, y, label_smoothing=s))
    np.testing.assert_allclose(pl(2.0), losses.pseudo_labels(logits, temperature=2.0), rtol=1e-6)
    np.testing.assert_allclose(ns(3.0), losses.noisy_student_loss(logits, y, logits, T, unlabeled_ratio=3.0), rtol=1e-6)
    np.testing.assert_allclose(sc(0.1), losses.soft_cross_entropy(logits, T, label_smoothing=0.1), rtol=1e-6)
    np.testing.assert_allclose(hc(0.1), losses.hard_cross_entropy(logits, y, label_smoothing=0.1), rtol=1e-6)
    for bad in (0.0, -1.0, np.nan):
        assert np.all(np.isnan(pl(bad)))
    for bad in (-0.5, np.nan):
        assert np.isnan(ns(bad))
    for bad in (1.0, -0.1, np.nan):
        assert np.all(np.isnan(sc(bad))) and np.all(np.isnan(hc(bad)))
    # a gradient with respect to the temperature flows
    assert np.isfinite(jax.grad(lambda t: losses.pseudo_labels(logits, temperature=t)[0, 0])(1.5))


def test_empty_batches_give_empty_results_and_the_mean_loss_refuses_them():
    empty = np.zeros((0, 3), np.float32)
    chex.assert_shape(losses.soft_cross_entropy(empty, empty), (0,))
    chex.assert_shape(losses.hard_cross_entropy(empty, np.zeros(0, int)), (0,))
    chex.assert_shape(losses.pseudo_labels(empty), (0, 3))
    y = np.zeros(2, int)
    with pytest.raises(ValueError, match="student_logits_labeled must hold at least one example"):
        losses.noisy_student_loss(empty, np.zeros(0, int), Z, T, unlabeled_ratio=1.0)
    with pytest.raises(ValueError, match="student_logits_unlabeled must hold at least one example"):
        losses.noisy_student_loss(Z, y, empty, empty, unlabeled_ratio=1.0)


# --------------------------------------------------------------------------- documented rules


def test_hard_pseudo_label_ties_go_to_the_lowest_class():
    """Documented: "among equal largest logits the lowest class index wins"."""
    logits = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, -1.0, 5.0, 5.0]], np.float32)
    hard = np.asarray(losses.pseudo_labels(logits, hard=True))
    np.testing.assert_array_equal(hard, np.eye(4, dtype=np.float32)[[1, 0, 2]])


def test_label_smoothing_rule_as_documented():
    """Documented: targets become (1 - s) t + s / C; hard: (1 - s)(-log p_y) + s mean_c(-log p_c)."""
    logits = np.array([[2.0, 0.0, -1.0, 0.5]], np.float32)
    log_p = _np_log_softmax(logits)[0]
    s, t = 0.2, np.array([[0.0, 1.0, 0.0, 0.0]], np.float32)
    want = -np.sum(((1 - s) * t[0] + s / 4) * log_p)
    np.testing.assert_allclose(losses.soft_cross_entropy(logits, t, label_smoothing=s), [want], rtol=1e-6)
    want_hard = (1 - s) * -log_p[1] + s * np.mean(-log_p)
    np.testing.assert_allclose(losses.hard_cross_entropy(logits, np.array([1]), label_smoothing=s),
                               [want_hard], rtol=1e-6)
    # the noisy-student loss smooths labels (0.1 by default) and leaves pseudo labels alone
    u = np.array([[0.1, 0.2, 0.3, 0.4]], np.float32)
    got = losses.noisy_student_loss(logits, np.array([1]), logits, u, unlabeled_ratio=2.0)
    want_total = ((0.9 * -log_p[1] + 0.1 * np.mean(-log_p)) + 2.0 * -np.sum(u[0] * log_p))
    np.testing.assert_allclose(got, want_total, rtol=1e-6)
