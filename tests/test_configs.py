"""Every `configs/*.json` loads as an `IterateConfig` and still holds the recipe
`docs/reproducing.md` promises (facts from `shared/reference/noisystudent.md`, sections in the
comments), so the files cannot rot unnoticed."""

import json
from pathlib import Path

import pytest

from nsjax.loop import IterateConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
FILES = sorted(CONFIGS.glob("*.json"))


def load(name: str) -> IterateConfig:
    return IterateConfig.from_json((CONFIGS / f"{name}.json").read_text())


def generations(config: IterateConfig):
    return [config.generation_config(g) for g in range(len(config.generations))]


def test_the_documented_configs_exist():
    assert {p.stem for p in FILES} >= {"imagenet_noisy_student", "imagenet_noisy_student_v2",
                                       "svhn"}  # fmt: skip


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_config_loads_and_round_trips(path):
    config = IterateConfig.from_json(path.read_text())
    data = json.loads(path.read_text())
    assert set(data) == set(json.loads(config.to_json())), "IterateConfig fields"
    assert IterateConfig.from_json(config.to_json()) == config
    for g, train in enumerate(generations(config)):
        assert train.image_size >= 32, (path.name, g)
    # the file names which document uses it
    assert path.name in (CONFIGS.parent / "docs" / "reproducing.md").read_text()


def test_imagenet_v1_recipe():
    config = load("imagenet_noisy_student")
    gens = generations(config)
    # (b6): B7 -> B7, B7 -> L0, L0 -> L1, L1 -> L2, L2 -> L2 after a supervised B7 teacher
    assert [t.model for t in gens] == ["b7", "b7", "l0", "l1", "l2", "l2"]
    # (c2): training resolutions 600, 380, 380, 475 (the variants' own)
    assert [t.image_size for t in gens] == [600, 600, 380, 380, 475, 475]
    # (b4), (b6): confidence > 0.3, 130K images per class
    assert (config.per_class, config.min_confidence) == (130000, 0.3)
    for t in gens:  # (b6): labeled batch 2048, lr 0.128 at 2048, 350 epochs, noise
        assert (t.labeled_batch, t.learning_rate, t.epochs) == (2048, 0.128, 350.0)
        assert (t.dropout_rate, t.drop_path_rate, t.randaugment_layers,
                t.randaugment_magnitude) == (0.5, 0.2, 2, 27.0)  # fmt: skip
        assert (t.num_classes, t.decay_epochs, t.weight_decay) == (1000, 2.4, 1e-5)
        assert not t.hard_targets and t.teacher_temperature == 1.0
    # (b6): unlabeled batch 3x labeled for B7/L0/L1/L2; generation 0 is supervised
    assert [t.unlabeled_ratio for t in gens] == [0.0, 3.0, 3.0, 3.0, 3.0, 3.0]


def test_imagenet_v2_recipe():
    config = load("imagenet_noisy_student_v2")
    gens = generations(config)
    # (b6) [paper v2+]: teacher B7 -> L2 (14:1) -> L2 (14:1) -> L2 (28:1)
    assert [t.model for t in gens] == ["b7", "l2", "l2", "l2"]
    assert [t.unlabeled_ratio for t in gens] == [0.0, 14.0, 14.0, 28.0]
    assert (config.per_class, config.min_confidence) == (130000, 0.3)
    assert all(t.dropout_rate == 0.5 and t.epochs == 350.0 for t in gens)


def test_svhn_recipe():
    config = load("svhn")
    gens = generations(config)
    # (b2): B0 teacher and B0 student, one iteration, 32-px small-image variant
    assert [t.model for t in gens] == ["b0", "b0"]
    assert all(t.small_image and t.image_size == 32 and t.num_classes == 10 for t in gens)
    # (b2): batch 128, unlabel_ratio 5, randaug_mag 5, weight_decay 1e-4, lr 0.016 per 256
    student = gens[1]
    assert (student.labeled_batch, student.unlabeled_ratio, student.unlabeled_batch) == (
        128, 5.0, 640)
    assert (student.randaugment_layers, student.randaugment_magnitude) == (2, 5.0)
    assert (student.weight_decay, student.base_learning_rate) == (1e-4, 0.016)
    # (b2): dropout and stochastic depth not overridden (B0's 0.2), soft targets at T = 1
    assert (student.model_config().dropout_rate, student.drop_path_rate) == (0.2, 0.2)
    assert not student.hard_targets and student.teacher_temperature == 1.0
    # (b2) derived: ~202 labeled epochs of 541 steps = the official 109,474 steps; decay
    # x0.97 every ~1.37 epochs (final_base_lr 0.0002)
    steps = student.epochs * (69257 // 128)
    assert abs(steps - 109474) < 5 and student.decay_epochs == 1.37
    # (b1): SVHN mean / std x 255
    assert student.mean == pytest.approx(tuple(255 * v for v in (0.4377, 0.4438, 0.4728)))
    assert student.std == pytest.approx(tuple(255 * v for v in (0.1980, 0.2010, 0.1970)))
    # (b4): the offline variant's filter_unlabel: 53,113 per class above 0.3, official rule
    assert (config.per_class, config.min_confidence, config.balance_mode) == (
        53113, 0.3, "official")
