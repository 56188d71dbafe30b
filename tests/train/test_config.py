"""`TrainConfig`: checked fields, derived values, JSON round trip."""

import dataclasses
import json

import pytest
from hypothesis import given, settings, strategies as st

from nsjax.models import B0_BLOCKS, config_for
from nsjax.train import TrainConfig


def test_defaults_are_the_official_recipe():
    c = TrainConfig(steps_per_epoch=625)
    assert (c.optimizer, c.base_learning_rate, c.warmup_epochs) == ("rmsprop", 0.016, 5.0)
    assert (c.lr_decay, c.decay_epochs, c.decay_rate) == ("exponential", 2.4, 0.97)
    assert (c.rmsprop_decay, c.momentum, c.epsilon) == (0.9, 0.9, 1e-3)
    assert (c.weight_decay, c.label_smoothing, c.ema_decay) == (1e-5, 0.1, 0.9999)
    assert (c.bn_momentum, c.bn_eps, c.grad_clip_norm) == (0.99, 1e-3, None)
    assert (c.teacher_temperature, c.hard_targets, c.unlabeled_label_smoothing) == (1.0, False, 0.0)
    assert (c.randaugment_layers, c.randaugment_magnitude) == (2, 27.0)
    assert c.learning_rate == pytest.approx(0.016 * 2048 / 256)  # scaled by the labeled batch
    assert c.unlabeled_batch == 3 * 2048
    assert c.total_steps == 350 * 625


def test_model_config_applies_the_overrides_to_the_variant():
    c = TrainConfig(model="b1", width=0.5, resolution=64, dropout_rate=0.5, drop_path_rate=0.1,
                    small_image=True, bn_momentum=0.9, blocks=list(B0_BLOCKS[:2]))
    want = config_for("b1", width=0.5, train_resolution=64, test_resolution=64, dropout_rate=0.5,
                      drop_path_rate=0.1, small_image=True, bn_momentum=0.9, blocks=B0_BLOCKS[:2])
    assert c.model_config() == want
    assert c.image_size == 64
    assert TrainConfig(model="b3").image_size == 300  # the variant's own resolution


@pytest.mark.parametrize("field, value, error", [
    ("model", "b9", ValueError), ("optimizer", "adam", ValueError), ("lr_decay", "step", ValueError),
    ("labeled_batch", 0, ValueError), ("labeled_batch", 2.0, TypeError),
    ("unlabeled_ratio", -1.0, ValueError), ("ema_decay", 1.0, ValueError),
    ("decay_rate", 1.5, ValueError), ("resolution", 16, ValueError), ("fsdp", 1, TypeError),
    ("mean", (1.0, 2.0), ValueError), ("std", (1.0, 0.0, 1.0), ValueError),
    ("compute_dtype", "float16", ValueError), ("randaugment_magnitude", -1.0, ValueError),
    ("base_learning_rate", 0.0, ValueError), ("steps_per_epoch", 0, ValueError),
    ("blocks", (), ValueError), ("blocks", ("b0",), TypeError),
])  # fmt: skip
def test_a_bad_field_is_refused_by_name(field, value, error):
    with pytest.raises(error, match=field):
        TrainConfig(**{field: value})


def test_steps_per_epoch_is_required_for_the_schedule():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        TrainConfig().total_steps


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 4096), ratio=st.sampled_from([0.0, 1.0, 3.0, 14.0]),
       epochs=st.floats(0.5, 700), model=st.sampled_from(["b0", "b7", "l2"]),
       magnitude=st.one_of(st.none(), st.floats(0, 30)), fsdp=st.booleans(),
       stages=st.sampled_from([None, 1, 2, 7]))
def test_json_round_trip_is_exact(tmp_path_factory, batch, ratio, epochs, model, magnitude, fsdp,
                                  stages):  # fmt: skip
    blocks = None if stages is None else B0_BLOCKS[:stages]
    c = TrainConfig(model=model, labeled_batch=batch, unlabeled_ratio=ratio, epochs=epochs,
                    randaugment_magnitude=magnitude, fsdp=fsdp, steps_per_epoch=7, blocks=blocks)
    assert TrainConfig.from_json(c.to_json()) == c
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    c.save(path)
    assert TrainConfig.load(path) == c
    assert hash(TrainConfig.load(path)) == hash(c)  # usable as a static jit argument


def test_json_with_an_unknown_field_is_refused():
    data = json.loads(TrainConfig().to_json())
    data["learning_rate_typo"] = 1.0
    with pytest.raises(ValueError, match="learning_rate_typo"):
        TrainConfig.from_json(json.dumps(data))


def test_save_leaves_no_temporary_file(tmp_path):
    TrainConfig().save(tmp_path / "config.json")
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_every_field_is_in_the_json():
    names = set(json.loads(TrainConfig().to_json()))
    assert names == {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("model, resolution, test", [("b0", 32, 32), ("b3", 64, 64),
                                                     ("l2", 475, 800), ("l2", 300, 505)])
def test_the_test_resolution_scales_with_the_training_resolution(model, resolution, test):
    # a 32-px B0 is evaluated (and labels) at 32 px, not at B0's 224
    config = TrainConfig(model=model, resolution=resolution).model_config()
    assert (config.train_resolution, config.test_resolution) == (resolution, test)


def test_test_resolution_overrides_the_scaled_one():
    # a FixRes fine-tune of L2 trains and tests at 800 px (the scaled side would be 1347)
    config = TrainConfig(model="l2", resolution=800, test_resolution=800).model_config()
    assert (config.train_resolution, config.test_resolution) == (800, 800)
    assert TrainConfig(model="l2", test_resolution=600).model_config().test_resolution == 600
    with pytest.raises(ValueError, match="test_resolution must be >= 32, got 16"):
        TrainConfig(test_resolution=16)
