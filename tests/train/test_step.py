"""`train_step`: one forward pass over labeled + unlabeled images, online teacher targets,
bad batches refused before any work, the state's fields and its checkpoint round trip."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nsjax import losses
from nsjax.models import B0_BLOCKS, efficientnet_from_config
from nsjax.train import (
    Checkpointer,
    Teacher,
    TrainConfig,
    ema_model,
    init_state,
    normalize,
    running_bn_state,
    train_step,
)
from tests.train._runs import FAST_COMPILE

CONFIG = TrainConfig(width=0.25, blocks=B0_BLOCKS[:2], head_channels=64, small_image=True,
                     resolution=32, num_classes=10, labeled_batch=4, unlabeled_ratio=1.0, steps_per_epoch=10,
                     epochs=3, warmup_epochs=0.0, compute_dtype="float32",
                     randaugment_magnitude=None)  # fmt: skip
RNG = np.random.default_rng(0)


def _batch(**extra):
    batch = dict(images=RNG.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
                 labels=RNG.integers(0, 10, 4).astype(np.int32),
                 unlabeled_images=RNG.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))  # fmt: skip
    batch.update(extra)
    return batch


@pytest.fixture(scope="module")
def state():
    return init_state(CONFIG, jax.random.key(0))


@pytest.fixture(scope="module")
def teacher():
    model, bn = efficientnet_from_config(CONFIG.model_config(), key=jax.random.key(7),
                                         num_classes=10)  # fmt: skip
    # non-trivial running statistics, so eval mode differs from batch statistics
    bn = jax.tree.map(lambda v: v + 0.1 * jnp.arange(v.shape[0], dtype=v.dtype) / v.shape[0], bn)
    return Teacher(model, bn)


def test_online_teacher_targets_are_its_eval_softmax_on_the_clean_view(state, teacher):
    """Online (teacher in the step, on a 40-px clean view) equals offline with targets
    `softmax(teacher(normalize(clean)))` computed outside: same loss, same new state."""
    batch = _batch()
    clean = RNG.integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    def step(state, batch, teacher=None):  # one step each: compiled fast (LLVM -O0)
        compiled = jax.jit(train_step).lower(state, batch, teacher).compile(FAST_COMPILE)
        return compiled(state, batch, teacher)

    online, m_online = step(state, dict(batch, teacher_images=clean), teacher)
    logits = teacher.model(normalize(clean, CONFIG.mean, CONFIG.std, jnp.float32), teacher.state,
                           train=False)[0]  # fmt: skip
    targets = losses.pseudo_labels(logits)
    offline, m_offline = step(state, dict(batch, unlabeled_targets=targets))
    chex_close = lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)  # noqa: E731
    for name in ("loss", "labeled_loss", "unlabeled_loss", "grad_norm"):
        chex_close(m_online[name], m_offline[name])
    jax.tree.map(chex_close, eqx.filter(online, eqx.is_inexact_array),
                 eqx.filter(offline, eqx.is_inexact_array))  # fmt: skip
    # the loss is the official one: labeled CE (smoothed) + ratio * soft CE on the targets
    assert float(m_online["unlabeled_loss"]) > 0
    np.testing.assert_allclose(m_online["loss"], m_online["labeled_loss"]
                               + CONFIG.unlabeled_ratio * m_online["unlabeled_loss"], rtol=1e-6)
    # one step: the step counter, the EMA at TF's first decay 2/11, the BN accumulators moved
    assert int(online.step) == 1 and int(state.step) == 0
    assert float(m_online["learning_rate"]) == pytest.approx(CONFIG.learning_rate)
    d = 2 / 11
    np.testing.assert_allclose(online.ema_params.classifier.weight,
                               d * state.model.classifier.weight
                               + (1 - d) * online.model.classifier.weight, rtol=1e-5, atol=1e-7)
    assert not np.allclose(online.model.classifier.weight, state.model.classifier.weight)


def test_bn_running_statistics_are_zero_debiased(state):
    """`running_bn_state`: the accumulators divided by 1 - m^t; the initial (0, 1) at t = 0."""
    m = CONFIG.bn_momentum
    leaves = jax.tree.leaves(running_bn_state(state))
    assert all(np.all(v == 0) for v in leaves[0::2]) and all(np.all(v == 1) for v in leaves[1::2])
    acc = jax.tree.map(lambda v: jnp.full_like(v, 0.5), state.bn_state)
    moved = eqx.tree_at(lambda s: (s.bn_state, s.step), state, (acc, jnp.int32(3)))
    for v in jax.tree.leaves(running_bn_state(moved)):
        np.testing.assert_allclose(v, 0.5 / (1 - m**3), rtol=1e-6)
    biased = TrainConfig(**{**CONFIG.__dict__, "bn_debias": False})
    tf_state = init_state(biased, jax.random.key(0))
    assert running_bn_state(tf_state) is tf_state.bn_state


def test_every_state_field_survives_a_checkpoint_round_trip(state, tmp_path):
    with Checkpointer(tmp_path, keep=1) as ckpt:
        ckpt.save(0, state)
        ckpt.wait()
        back, _ = ckpt.restore(eqx.filter_eval_shape(init_state, CONFIG, jax.random.key(1)))
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(back), strict=True):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(a, b)
    assert back.config == CONFIG
    model, bn = ema_model(back)
    assert model.config == CONFIG.model_config() and bn is back.ema_bn_state


@pytest.mark.parametrize("change, message", [
    (lambda b: b.pop("labels"), "labels"),
    (lambda b: b.update(images=b["images"].astype(np.float32)), "images"),
    (lambda b: b.update(images=np.transpose(b["images"], (0, 3, 1, 2))), "images"),
    (lambda b: b.update(images=b["images"][:3]), r"\[4, 32, 32, 3\]"),
    (lambda b: b.update(labels=b["labels"][:3]), "labels"),
    (lambda b: b.pop("unlabeled_images"), "unlabeled_images"),
    (lambda b: b.update(unlabeled_targets=np.ones((4, 9), np.float32)), "unlabeled_targets"),
    (lambda b: b.update(extra=1), "unknown"),
])  # fmt: skip
def test_a_bad_batch_is_refused_before_any_work(state, change, message):
    batch = _batch(unlabeled_targets=np.zeros(4, np.int32))
    change(batch)
    with pytest.raises((ValueError, TypeError), match=message):
        train_step(state, batch)


def test_a_teacher_with_another_class_count_is_refused(state):
    model, bn = efficientnet_from_config(CONFIG.model_config(), key=jax.random.key(1),
                                         num_classes=7)  # fmt: skip
    with pytest.raises(ValueError, match="7 classes"):
        train_step(state, _batch(), Teacher(model, bn))


def test_offline_targets_and_a_teacher_together_are_refused(state, teacher):
    with pytest.raises(ValueError, match="one source of targets"):
        train_step(state, _batch(unlabeled_targets=np.zeros(4, np.int32)), teacher)


def test_init_state_checks_its_arguments():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        init_state(TrainConfig(), jax.random.key(0))
    with pytest.raises(TypeError, match="key"):
        init_state(CONFIG, 0)
    with pytest.raises(TypeError, match="TrainConfig"):
        init_state(CONFIG.model_config(), jax.random.key(0))


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_bn_groups_lay_out_each_group_with_its_share_of_both_streams(groups):
    """Per-replica BN: group g holds labeled rows g*B_l/G... then unlabeled rows g*B_u/G...;
    the logits are split back in the original order."""
    from nsjax.train._step import _deinterleave, _interleave

    labeled, unlabeled = jnp.arange(4), 100 + jnp.arange(8)
    rows = _interleave(labeled, unlabeled, groups)
    per_l, per_u = 4 // groups, 8 // groups
    for g, group in enumerate(np.split(np.asarray(rows), groups)):
        np.testing.assert_array_equal(group[:per_l], labeled[g * per_l:(g + 1) * per_l])
        np.testing.assert_array_equal(group[per_l:], unlabeled[g * per_u:(g + 1) * per_u])
    np.testing.assert_array_equal(_deinterleave(rows, 4, groups),
                                  jnp.concatenate([labeled, unlabeled]))


def test_bn_groups_must_divide_both_batches():
    with pytest.raises(ValueError, match="bn_groups must divide unlabeled_batch"):
        TrainConfig(labeled_batch=8, unlabeled_ratio=0.5, bn_groups=8)
