"""`robustness_accuracy` on a classifier whose answers are known, its table and plot, and the
teacher-file layer under `nsjax evaluate --robustness` (labels, the written report)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nsjax.loop._robustness import _first, run_labels, write_robustness_report
from nsjax.robustness import robustness_accuracy, robustness_plot, robustness_table


def _brightness_classifier(x):
    """Class 1 when the mean pixel is above 128: logits float32 [B, 2]."""
    m = x.mean(axis=(1, 2, 3))
    return jnp.stack([128.0 - m, m - 128.0], axis=-1)


def _batches():
    """Two batches of flat images, means 100 / 156 (labels 0 / 1), the last row of the second
    batch padding (mask False): right on clean images, so counting it would show."""
    levels = np.array([100, 156, 100, 156, 100, 156, 100, 156], np.uint8)
    images = np.broadcast_to(levels[:, None, None, None], (8, 32, 32, 3)).copy()
    labels = (levels > 128).astype(np.int32)
    mask = np.ones(8, bool)
    second = dict(images=images[:4], labels=labels[:4], mask=np.array([1, 1, 1, 0], bool))
    return [dict(images=images, labels=labels, mask=mask), second]


def test_accuracy_is_counted_over_the_mask_for_each_condition():
    result = robustness_accuracy(_brightness_classifier, _batches(), jax.random.key(0),
                                 corruptions=["contrast", "gaussian_noise"], severities=[1, 5],
                                 fgsm_epsilons=[8.0, 40.0], pgd_epsilons=[40.0], pgd_steps=3)
    assert result["count"] == 11 and result["clean"] == 1.0
    # contrast keeps each image's mean; Gaussian noise averages out over 3,072 pixels
    assert result["corruptions"] == {"contrast": [1.0, 1.0], "gaussian_noise": [1.0, 1.0]}
    # every image is 28 grey levels from the boundary: ε = 8 cannot flip it, ε = 40 flips all
    assert result["fgsm"] == {"epsilons": [8.0, 40.0], "accuracy": [1.0, 0.0]}
    assert result["pgd"] == {"epsilons": [40.0], "accuracy": [0.0], "steps": 3}
    assert result["severities"] == [1, 5] and "mce_alexnet" not in result
    json.dumps(result)


def test_each_severity_is_scored_on_its_own_corruption():
    """A classifier of pixel spread (class 1 above a std of 50 grey levels) on flat images:
    Gaussian noise of σ = 0.08·255 (severity 1) leaves it at class 0, σ = 0.38·255 (severity
    5) moves it to class 1."""
    def spread_classifier(x):
        s = x.std(axis=(1, 2, 3))
        return jnp.stack([50.0 - s, s - 50.0], axis=-1)

    flat = dict(images=np.full((4, 32, 32, 3), 128, np.uint8), labels=np.zeros(4, np.int32))
    result = robustness_accuracy(spread_classifier, [flat], jax.random.key(0),
                                 corruptions=["gaussian_noise"], severities=[1, 5],
                                 fgsm_epsilons=[], pgd_epsilons=[])
    assert result["clean"] == 1.0 and result["corruptions"]["gaussian_noise"] == [1.0, 0.0]


def test_the_same_key_gives_the_same_corrupted_images():
    def score(key):
        def noisy_classifier(x):  # sensitive to every pixel of the corrupted image
            return jnp.stack([x[:, 0, 0, 0], x[:, 0, 1, 0]], axis=-1)

        return robustness_accuracy(noisy_classifier, _batches(), key,
                                   corruptions=["shot_noise", "impulse_noise"],
                                   severities=[5], fgsm_epsilons=[], pgd_epsilons=[])

    a, b = score(jax.random.key(1)), score(jax.random.key(1))
    assert a == b
    others = [score(jax.random.key(k))["corruptions"] for k in range(2, 6)]
    assert any(o != a["corruptions"] for o in others)


def test_bad_arguments_are_refused_before_any_work():
    def never(x):
        raise AssertionError("ran")

    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"corruptions\[1\] must be one of .*got 'fogg'"):
        robustness_accuracy(never, _batches(), key, corruptions=["fog", "fogg"])
    with pytest.raises(ValueError, match=r"severities must be ints in 1..5, got \(0, 1\)"):
        robustness_accuracy(never, _batches(), key, severities=[0, 1])
    with pytest.raises(ValueError, match=r"fgsm_epsilons\[0\] must be >= 0, got -2.0"):
        robustness_accuracy(never, _batches(), key, fgsm_epsilons=[-2.0])
    with pytest.raises(ValueError, match="at least one counted image"):
        robustness_accuracy(_brightness_classifier, [], key, corruptions=[])


def _fake(clean, contrast, fgsm):
    return {"count": 10, "clean": clean, "severities": [1, 2], "resolution": 32,
            "corruptions": {"contrast": contrast},
            "fgsm": {"epsilons": [2.0], "accuracy": [fgsm]},
            "pgd": {"epsilons": [], "accuracy": [], "steps": 10}}


def test_table_plot_and_report(tmp_path):
    results = {"gen0": _fake(0.9, [0.8, 0.6], 0.3), "gen1": _fake(0.95, [0.9, 0.7], 0.5)}
    table = robustness_table(results)
    assert table.splitlines()[0] == "| condition | gen0 | gen1 |"
    assert "| clean | 90.0 | 95.0 |" in table
    assert "| contrast (mean of severities) | 70.0 | 80.0 |" in table
    assert "| FGSM ε = 2 | 30.0 | 50.0 |" in table
    assert robustness_plot(results)[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_robustness_report(tmp_path / "r", results) == table
    assert json.loads((tmp_path / "r" / "robustness.json").read_text()) == results
    assert (tmp_path / "r" / "robustness.png").read_bytes()[:4] == b"\x89PNG"
    assert table in (tmp_path / "r" / "robustness.md").read_text()
    with pytest.raises(ValueError, match="at least one model"):
        robustness_table({})


def test_run_labels_keep_what_differs():
    assert run_labels(["r/gen0/train/teacher.eqx", "r/gen1/train/teacher.eqx"]) == ["gen0",
                                                                                   "gen1"]
    assert run_labels(["a/teacher.eqx", "b/c/teacher.eqx"]) == ["a", "b/c"]
    assert run_labels(["only/teacher.eqx"]) == ["only/teacher.eqx"]


def test_first_stops_after_the_requested_images():
    kept = list(_first(_batches(), 10))
    assert [int(b["mask"].sum()) for b in kept] == [8, 2]
    assert [int(b["mask"].sum()) for b in _first(_batches(), None)] == [8, 3]
    assert len(list(_first(_batches(), 8))) == 1
