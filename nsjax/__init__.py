"""nsjax: Noisy Student self-training (Xie et al., 2019) in pure-functional JAX.

Subpackages, each importable on its own (see docs/api.md):

- `nsjax.losses`: soft and hard cross entropy, pseudo labels with temperature, the Noisy
  Student loss.
- `nsjax.noise`: RandAugment (policy and size-relative constants), Cutout, the 32-px
  pipeline, dropout, drop-path and its per-block rate rule; `nsjax.noise.ops` holds each
  RandAugment op alone, batched, computed as PIL (default) or as the TF reference.
- `nsjax.balance`: per-class balancing of pseudo-labelled data, host NumPy, 10^8 records.
- `nsjax.fixres`: train/test resolution resize, evaluation and Inception crops, FixRes masks.
- `nsjax.models`: TF-faithful Equinox EfficientNet B0-B7, L0-L2 and the 32-px variant, with
  timm weight import.
- `nsjax.robustness`: the 19 ImageNet-C corruptions, mCE, ImageNet-A logits, ImageNet-P flip
  rates, FGSM and PGD, and a classifier's accuracy under all of them.
"""

__version__ = "0.1.0"
