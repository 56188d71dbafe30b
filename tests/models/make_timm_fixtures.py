"""Write the timm EfficientNet parity fixtures (needs torch and timm; nothing is downloaded).

Run once from the repository root: ``python tests/models/make_timm_fixtures.py``. For each case in
``timm_reference.CASES`` it writes ``fixtures/<case>.json`` (state-dict manifest and metadata) and
``fixtures/<case>.npz`` (timm's eval-mode logits in float32 and float64 per resolution).
"""

import copy
import json
import re

import numpy as np
import timm
import torch
from timm.layers import Conv2dSame
from timm_reference import (
    CASES,
    FIXTURE_DIR,
    GAIN,
    RESIDUAL_GAIN,
    Case,
    digest,
    synthetic_images,
    synthetic_weights,
)

BN_EPS = 1e-3


def check_tf_semantics(model: torch.nn.Module) -> None:
    """Assert TF-style BN eps and SAME padding: dynamic ``Conv2dSame`` for strided convs,
    static symmetric (k-1)/2 padding for stride-1 convs."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.eps == BN_EPS, (name, module.eps)
        if isinstance(module, torch.nn.Conv2d):
            k, s = module.kernel_size[0], module.stride[0]
            if s > 1:
                assert isinstance(module, Conv2dSame), name
            else:
                assert module.padding == ((k - 1) // 2,) * 2, (name, module.padding)


def logits(model: torch.nn.Module, images: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """Eval-mode logits of NHWC ``images`` (transposed to NCHW for torch)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(dtype)
    with torch.no_grad():
        return model(x).numpy()


def make_case(case: Case) -> dict[str, float]:
    """Build, load and run one case, write its fixtures, return its f32-vs-f64 relative error."""
    model = eval(case.constructor, {"timm": timm}).eval()
    check_tf_semantics(model)
    state = model.state_dict()
    manifest = {k: list(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    weights = synthetic_weights(manifest, case.weight_seed)
    loaded = {k: torch.from_numpy(v) for k, v in weights.items()}
    loaded |= {k: v for k, v in state.items() if k.endswith("num_batches_tracked")}
    model.load_state_dict(loaded, strict=True)
    model64 = copy.deepcopy(model).double()

    arrays, rel_err, image_digests = {}, {}, {}
    for size in case.resolutions:
        images = synthetic_images(case.batch, size, case.input_seed)
        image_digests[str(size)] = digest([images])
        f32, f64 = logits(model, images, torch.float32), logits(model64, images, torch.float64)
        assert f32.shape == (case.batch, case.num_classes) and np.isfinite(f32).all()
        arrays[f"logits_f32_{size}"], arrays[f"logits_f64_{size}"] = f32, f64
        rel_err[str(size)] = float(np.abs(f32 - f64).max() / np.abs(f64).max())

    np.savez_compressed(FIXTURE_DIR / f"{case.name}.npz", **arrays)
    meta = {
        "case": case.name,
        "constructor": case.constructor,
        "num_classes": case.num_classes,
        "resolutions": list(case.resolutions),
        "batch": case.batch,
        "weight_seed": case.weight_seed,
        "input_seed": case.input_seed,
        "gain": GAIN,
        "residual_gain": RESIDUAL_GAIN,
        "bn_eps": BN_EPS,
        "weights_sha256": digest(weights.values()),
        "images_sha256": image_digests,
        "f32_vs_f64_max_abs_diff_over_max_abs": rel_err,
        "versions": {"timm": timm.__version__, "torch": torch.__version__, "numpy": np.__version__},
        "manifest": manifest,
    }
    text = json.dumps(meta, indent=1)
    text = re.sub(r"\[([\d,\s]+)\]", lambda m: "[" + " ".join(m[1].split()) + "]", text)  # shapes
    (FIXTURE_DIR / f"{case.name}.json").write_text(text + "\n")
    return rel_err


def main() -> None:
    """Write the fixtures of every case."""
    FIXTURE_DIR.mkdir(exist_ok=True)
    for case in CASES:
        print(case.name, "f32 vs f64 relative error:", make_case(case))


if __name__ == "__main__":
    main()
