"""Write `nsjax/_data/digits.npz`, the real dataset `nsjax demo` runs on.

The 1,797 8x8 grey handwritten digits of the UCI "Optical Recognition of Handwritten Digits"
set (Alpaydin and Kaynak, 1998; CC BY 4.0; the test part shipped with scikit-learn as
`sklearn.datasets.load_digits`): `images` uint8 `[1797, 8, 8]` (the 0..16 counts scaled to
0..255, rounded) and `labels` uint8 `[1797]` (0..9). Run once with scikit-learn installed:

    python scripts/make_digits_npz.py
"""

import os

import numpy as np
from sklearn.datasets import load_digits

OUT = os.path.join(os.path.dirname(__file__), "..", "nsjax", "_data", "digits.npz")

if __name__ == "__main__":
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    np.savez_compressed(OUT, images=images, labels=digits.target.astype(np.uint8))
    print(f"wrote {os.path.normpath(OUT)}: {images.shape} {images.dtype}")
