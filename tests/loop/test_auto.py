"""The defaults chosen from the data and the machine (`nsjax.loop._auto`): small images take
the 32-px variant, a CPU a scaled-down model with epochs from an image budget, an accelerator
the recipe; and the plan line states them."""

import numpy as np
import pytest

from nsjax.data import NpzSource
from nsjax.loop import IterateConfig
from nsjax.loop._auto import (
    CPU_IMAGES,
    CPU_TEACHER_IMAGES,
    DataFacts,
    data_facts,
    iterate_defaults,
    plan_line,
    train_defaults,
)
from nsjax.train import TrainConfig


def test_data_facts_of_grey_arrays(tmp_path):
    # 28x28 grey [N, H, W] arrays, as MNIST ships: small images, their classes and count
    np.savez(tmp_path / "d.npz", images=np.zeros((40, 28, 28), np.uint8),
             labels=np.arange(40) % 7)
    facts = data_facts(NpzSource(str(tmp_path / "d.npz")), platform="cpu")
    assert facts == DataFacts(num_classes=7, side=28, labeled=40, platform="cpu")
    with pytest.raises(ValueError, match="labeled must be a labeled source"):
        np.savez(tmp_path / "u.npz", images=np.zeros((4, 28, 28), np.uint8))
        data_facts(NpzSource(str(tmp_path / "u.npz"), labeled=False))


@pytest.mark.parametrize("side, small", [(8, True), (64, True), (65, False), (224, False)])
def test_small_images_take_the_32_px_variant(side, small):
    fields = train_defaults(DataFacts(10, side, 1000, "gpu"), "b0", student=True)
    config = TrainConfig(**fields)
    assert config.small_image is small
    assert config.image_size == (32 if small else 224)
    assert config.randaugment_magnitude == (5.0 if small else 27.0)  # SVHN's, the recipe's


def test_a_cpu_scales_the_model_down_and_budgets_the_epochs():
    facts = DataFacts(10, 28, 1000, "cpu")
    teacher = TrainConfig(**train_defaults(facts, "b0", student=False))
    student = TrainConfig(**train_defaults(facts, "b1", student=True))
    assert (teacher.width, teacher.depth) == (0.25, 0.25)
    assert (student.width, student.depth) == (0.25, pytest.approx(0.275))  # B1's d 1.1 x 0.25
    assert teacher.labeled_batch == student.labeled_batch == 32
    assert (teacher.unlabeled_ratio, student.unlabeled_ratio) == (0.0, 3.0)
    # 1000 // 32 = 31 steps an epoch: 31 * 32 teacher images, 31 * 128 student images
    assert teacher.epochs == round(CPU_TEACHER_IMAGES / (31 * 32))
    assert student.epochs == round(CPU_IMAGES / (31 * 128))
    assert student.optimizer == "adamw" and student.compute_dtype == "float32"


def test_an_accelerator_keeps_the_recipe():
    fields = train_defaults(DataFacts(1000, 500, 1_281_167, "tpu"), "b0", student=True)
    config = TrainConfig(**fields)
    assert (config.width, config.epochs, config.optimizer) == (None, 350.0, "rmsprop")
    assert config.labeled_batch == 2048 and config.unlabeled_ratio == 1.0
    small_set = TrainConfig(**train_defaults(DataFacts(10, 500, 100, "gpu"), "b0", student=False))
    assert small_set.labeled_batch == 16  # at most a quarter of the labeled set


def test_the_plan_line_states_the_schedule():
    facts = DataFacts(10, 28, 1000, "cpu")
    config = IterateConfig(**iterate_defaults(facts, ("b0", "b0", "b1")))
    assert [config.generation_config(g).model for g in range(3)] == ["b0", "b0", "b1"]
    assert plan_line(config, facts, 2) == (
        "Plan: b0(w0.25,d0.25) 32px 32ep batch 32 -> b0(w0.25,d0.25) 32px 40ep batch 32+32 -> "
        "b1(w0.25,d0.275) 32px 20ep batch 32+96 (small-image variant); 10 classes, 1000 "
        "labeled images of <= 28 px; 2 cpu device(s).")
