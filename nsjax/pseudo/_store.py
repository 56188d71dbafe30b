"""The pseudo-label store: a teacher's predictions over unlabeled images, kept small.

Per image the store keeps its source record `index`, its stable `id`, the predicted class
(argmax), the confidence (max probability at temperature 1) and the soft label as its top-k
**log-probabilities** (logits minus their logsumexp, computed in float64) in float16 with
their classes. Hard labels (`hard_labels`, the official `teacher_softmax_temp=-1`), soft labels
at any temperature (`soft_labels`) and the official confidence threshold (`confident`,
`min_threshold=0.3`) all come from it, and `classes` / `confidence` are what
`nsjax.balance.balance_classes` takes.

Why log-probabilities: a softmax at any temperature over the kept classes needs only logit
differences, which log-probabilities keep exactly (a per-image constant cancels), and float16
is most precise near 0, where the large probabilities are; a raw logit such as 30 would lose
~0.03 in float16. The mass outside the top k at T = 1 is `1 - sum(exp(top_log_probs))`.

Rebuilding a soft label at temperature T (`soft_labels`): a kept class gets
`exp(top_log_prob / T)`; the `C - k` other classes share the remaining mass
`rest = max(1 - sum(exp(top_log_probs)), 0)` (clamped to 0 when float16 rounding makes it
negative) as if their logits were equal: each has log-probability `r = log(rest / (C - k))`
at T = 1 and gets `exp(r / T)`; the row is then normalised (in float64, returned as float32).
So the ratios of the kept classes are those of `softmax(logits / T)` at any T, the rebuild is
exact (to float16 rounding) everywhere when k = C, and at k = C it is the official offline
rule `p^(1/T)` renormalised.

Layout. In memory, a frozen `PseudoLabels` of NumPy arrays (N images, k kept classes):
`index` int64[N], `ids` str (NumPy "U")[N], `classes` int32[N], `confidence` float32[N],
`top_classes` int16[N, k] (int32 when num_classes > 32767), most probable first (equal
log-probabilities: lower class first), `top_log_probs` float16[N, k], non-increasing. On disk,
one uncompressed `.npz` (`save`, written atomically) holding those arrays and `format`
("nsjax-pseudo-labels"), `version` (1) and `num_classes`, with the ids as UTF-8 bytes (NumPy
"S", padded to the longest id; a quarter of "U"'s 4 bytes per character).

Bytes per image on disk (C = 1000, id "n01440764/n01440764_10026.JPEG": 30 characters):

| k | bytes per image | of which the id | official float32 vector |
|---|---|---|---|
| 1 | 50 | 30 | 4,000 |
| 5 | 66 | 30 | 4,000 |
| 10 | 86 | 30 | 4,000 |
| 20 | 126 | 30 | 4,000 |

Rebuild error against the float64 `softmax(logits / T)`, C = 1000, 2,000 images of each
kind: logits 3 * N(0, 1) plus a bump of 8 (mean confidence 0.35) or 12 (0.65) on one class,
and flat N(0, 1) logits (0.017). Max absolute error over all entries / mean KL(exact || rebuilt)
in nats. At k = C the error is float16 rounding alone. At k < C it is the tail's shape, which
the store drops: over the kept classes the rebuild is exact, and the equal split of the rest is
what costs (at T != 1 it also moves mass between the kept classes and the tail: for T > 1 the
equal split gives the tail more than the true logits would).

| logits | k | T = 0.5 | T = 1 | T = 2 |
|---|---|---|---|---|
| bump 8 | 1 | 7.4e-01 / 2.5e+00 | 4.3e-01 / 2.0e+00 | 2.7e-01 / 1.0e+00 |
| bump 8 | 5 | 2.2e-01 / 4.3e-01 | 7.2e-02 / 9.4e-01 | 1.8e-01 / 7.9e-01 |
| bump 8 | 10 | 1.2e-01 / 1.5e-01 | 3.6e-02 / 6.1e-01 | 1.6e-01 / 6.7e-01 |
| bump 8 | 20 | 5.8e-02 / 4.5e-02 | 1.7e-02 / 3.6e-01 | 1.3e-01 / 5.4e-01 |
| bump 8 | 1000 | 6.3e-04 / 2.4e-07 | 1.6e-04 / 3.0e-07 | 4.0e-05 / 3.0e-07 |
| bump 12 | 1 | 7.3e-01 / 1.2e+00 | 4.6e-01 / 1.2e+00 | 4.0e-01 / 9.3e-01 |
| bump 12 | 5 | 2.6e-01 / 1.5e-01 | 7.1e-02 / 4.7e-01 | 2.1e-01 / 6.9e-01 |
| bump 12 | 10 | 1.4e-01 / 5.1e-02 | 3.2e-02 / 3.0e-01 | 1.6e-01 / 5.8e-01 |
| bump 12 | 20 | 5.4e-02 / 1.4e-02 | 1.5e-02 / 1.7e-01 | 1.3e-01 / 4.7e-01 |
| bump 12 | 1000 | 6.1e-04 / 9.2e-08 | 1.7e-04 / 1.7e-07 | 5.6e-05 / 3.3e-07 |
| flat | 1 | 2.9e-01 / 1.5e+00 | 2.9e-02 / 4.7e-01 | 5.3e-03 / 1.2e-01 |
| flat | 5 | 1.6e-01 / 1.1e+00 | 1.1e-02 / 4.1e-01 | 3.0e-03 / 1.1e-01 |
| flat | 10 | 1.3e-01 / 8.7e-01 | 7.7e-03 / 3.7e-01 | 2.4e-03 / 1.1e-01 |
| flat | 20 | 9.9e-02 / 6.5e-01 | 5.1e-03 / 3.2e-01 | 1.8e-03 / 9.7e-02 |
| flat | 1000 | 5.3e-04 / 2.4e-06 | 7.3e-05 / 7.4e-07 | 4.9e-06 / 2.2e-07 |

`from_logits` takes ~30 ms for 1024 x 1000 logits at k = 10 on one CPU core (a partition,
not a sort), `soft_labels` ~4 ms for 1024 rows.
"""

from __future__ import annotations

import dataclasses
import math
import os
import zipfile
from collections.abc import Sequence

import numpy as np

from nsjax._checks import (
    check_floating,
    check_integer,
    check_number,
    check_positive_int,
    check_probability,
    check_rank,
    shape_of,
)
from nsjax._io import atomic_write

__all__ = ["PseudoLabels", "concatenate", "from_logits", "load", "save"]

FORMAT, VERSION = "nsjax-pseudo-labels", 1
_INT16_CLASSES = 32767  # the most classes whose labels `top_classes` stores as int16
_ARRAYS = ("index", "ids", "classes", "confidence", "top_classes", "top_log_probs")


@dataclasses.dataclass(frozen=True, eq=False)
class PseudoLabels:
    """A teacher's predictions over N unlabeled images, k classes kept per image (see the
    module doc for the rebuild rule and the file layout).

    - `index`: int64[N], the record index in the unlabeled source, >= 0.
    - `ids`: str[N] (NumPy "U"), the record's stable id.
    - `classes`: int32[N], the predicted class (argmax of the logits).
    - `confidence`: float32[N], the max probability at T = 1 (from float64).
    - `top_classes`: int16[N, k] (int32 when num_classes > 32767), the k most probable
      classes, most probable first.
    - `top_log_probs`: float16[N, k], their log-probabilities at T = 1 (<= 0, non-increasing).
    - `num_classes`: C, with 1 <= k <= C.

    Constructing one checks every dtype and shape and the ranges of the values.
    """

    index: np.ndarray
    ids: np.ndarray
    classes: np.ndarray
    confidence: np.ndarray
    top_classes: np.ndarray
    top_log_probs: np.ndarray
    num_classes: int

    def __post_init__(self) -> None:
        _check_fields(self)

    def __len__(self) -> int:
        return self.index.shape[0]

    @property
    def top_k(self) -> int:
        """k, the classes kept per image."""
        return self.top_classes.shape[1]

    def soft_labels(self, temperature: float = 1.0, rows=None) -> np.ndarray:
        """The soft labels rebuilt at a temperature T.

        A kept class gets `exp(top_log_prob / T)`. The `C - k` other classes share the mass
        left at T = 1, `rest = 1 - sum(exp(top_log_probs))`, as if their logits were equal:
        each has log-probability `r = log(rest / (C - k))` at T = 1 and gets `exp(r / T)`
        (0 when float16 rounding makes `rest` <= 0: it is clamped to 0). The row is then
        normalised, in float64. So the kept classes have the ratios of `softmax(logits / T)`
        at any T; with k = C the result is `softmax(logits / T)` to float16 rounding, which is
        the official offline rule `p^(1/T)` renormalised.

        **Arguments:**

        - `temperature`: T > 0 and finite; 1 gives the teacher's probabilities, T < 1
          sharpens, T > 1 flattens. (Hard labels are `hard_labels()`.)
        - `rows`: int[n] rows of the store in [0, N), or None for all N.

        **Returns:** float32[n, C], rows summing to 1.
        """
        temperature = _check_temperature(temperature)
        rows = np.arange(len(self)) if rows is None else _check_rows("rows", rows, len(self))
        log_p = self.top_log_probs[rows].astype(np.float64)
        other = self.num_classes - self.top_k
        rest = 1.0 - np.exp(log_p).sum(axis=1)  # <= 0 only by float16 rounding: then 0
        r = np.log(rest / max(other, 1), out=np.full_like(rest, -np.inf),
                   where=(rest > 0) & (other > 0))  # fmt: skip
        shift = np.maximum(log_p[:, 0], r)  # the largest log-probability of the row
        kept = np.exp((log_p - shift[:, None]) / temperature)
        each_other = np.exp((r - shift) / temperature)
        out = np.empty((rows.size, self.num_classes), np.float64)
        out[:] = each_other[:, None]
        np.put_along_axis(out, self.top_classes[rows].astype(np.intp), kept, axis=1)
        out /= kept.sum(axis=1, keepdims=True) + other * each_other[:, None]
        return out.astype(np.float32)

    def hard_labels(self) -> np.ndarray:
        """**Returns:** int32[N], the predicted classes (the official `teacher_softmax_temp=-1`);
        the `classes` array itself, not a copy."""
        return self.classes

    def confident(self, threshold: float = 0.3) -> np.ndarray:
        """Which images the official filter keeps: confidence >= threshold, compared exactly
        (as in float64, like `nsjax.balance.balance_classes`).

        **Arguments:** `threshold`: in [0, 1] (the official `min_threshold` is 0.3).

        **Returns:** bool[N].
        """
        threshold = check_probability("threshold", threshold)
        return self.confidence >= np.float64(threshold)

    def targets(self, rows=None, *, temperature: float = 1.0,
                hard: bool = False) -> SoftTargets | np.ndarray:  # fmt: skip
        """The student's targets for `rows`: the hard labels int32[n] when `hard`, else a
        `SoftTargets` view that rebuilds `soft_labels(temperature, rows)` per batch, so that
        130M pseudo-labels of 1000 classes never become a dense 520 GB array."""
        rows = np.arange(len(self)) if rows is None else _check_rows("rows", rows, len(self))
        if hard:
            return self.classes[rows]
        return SoftTargets(self, rows, _check_temperature(temperature))

    def take(self, rows) -> PseudoLabels:
        """**Arguments:** `rows`: int[n] rows in [0, N), repeats allowed.

        **Returns:** a `PseudoLabels` of those n rows, in that order."""
        rows = _check_rows("rows", rows, len(self))
        arrays = {name: getattr(self, name)[rows] for name in _ARRAYS}
        return PseudoLabels(**arrays, num_classes=self.num_classes)

    def bytes_per_image(self) -> float:
        """**Returns:** the bytes per image on disk, ids included (UTF-8, padded to the longest;
        the official code stores a float32 vector: 4 * num_classes bytes)."""
        stored = _to_disk(self)
        return float(sum(a.itemsize * math.prod(a.shape[1:]) for a in stored.values()))


class SoftTargets:
    """Soft labels of some rows of a store, rebuilt when indexed: `targets[i]` for an int
    array `i` is `store.soft_labels(temperature, rows[i])`, float32 `[len(i), C]`.

    Has `shape` (`(n, C)`), `dtype` and `len`, which is what the input pipelines check and
    gather (`nsjax.data.student_pipeline(targets=...)`); pickles with its store (grain's
    worker processes receive it).
    """

    def __init__(self, store: PseudoLabels, rows: np.ndarray, temperature: float):
        self.store, self.rows, self.temperature = store, rows, temperature
        self.shape = (rows.size, store.num_classes)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i) -> np.ndarray:
        rows = self.rows[np.asarray(i)]
        return self.store.soft_labels(self.temperature, rows=rows.reshape(-1)).reshape(
            rows.shape + (self.shape[1],))


def from_logits(logits, *, index, ids, top_k: int) -> PseudoLabels:
    """Build the store's records from a teacher's logits.

    **Arguments:**

    - `logits`: float[n, C] (NumPy or JAX, any float dtype), finite; the log-softmax is
      computed in float64.
    - `index`: int[n], the records' indices in the unlabeled source, >= 0.
    - `ids`: str[n], the records' stable ids (a NumPy "U" array or a sequence of str).
    - `top_k`: k, the classes kept per image, in [1, C].

    **Returns:** a `PseudoLabels` of the n images (ties between equal logits: lower class
    first, as `np.argmax`).
    """
    logits = _check_logits(logits)
    n, num_classes = logits.shape
    top_k = check_positive_int("top_k", top_k)
    if top_k > num_classes:
        raise ValueError(f"top_k must be in [1, C] = [1, {num_classes}], got {top_k}")
    index = _check_vector("index", index, n)
    check_integer("index", index)
    ids = _as_ids(_check_vector("ids", ids, n))
    log_p = _log_softmax(logits)
    top_classes, top_log_p = _top_k(log_p, top_k)
    return PseudoLabels(
        index=index.astype(np.int64),
        ids=ids,
        classes=top_classes[:, 0].astype(np.int32),
        confidence=np.exp(top_log_p[:, 0]).astype(np.float32),
        top_classes=top_classes.astype(_class_dtype(num_classes)),
        top_log_probs=np.maximum(top_log_p, np.finfo(np.float16).min).astype(np.float16),
        num_classes=num_classes,
    )


def concatenate(parts: Sequence[PseudoLabels]) -> PseudoLabels:
    """Join stores, rows in order.

    **Arguments:** `parts`: one or more `PseudoLabels` with the same `num_classes` and `top_k`.

    **Returns:** a `PseudoLabels` of all their rows.
    """
    parts = list(parts)
    if not parts or not all(isinstance(p, PseudoLabels) for p in parts):
        raise TypeError(f"parts must be a non-empty sequence of PseudoLabels, got "
                        f"{[type(p).__name__ for p in parts]}")  # fmt: skip
    first = parts[0]
    for i, p in enumerate(parts):
        if (p.num_classes, p.top_k) != (first.num_classes, first.top_k):
            raise ValueError(f"parts must share num_classes and top_k: parts[0] has "
                             f"({first.num_classes}, {first.top_k}), parts[{i}] has "
                             f"({p.num_classes}, {p.top_k})")  # fmt: skip
    arrays = {name: np.concatenate([getattr(p, name) for p in parts]) for name in _ARRAYS}
    return PseudoLabels(**arrays, num_classes=first.num_classes)


def save(path: str | os.PathLike, labels: PseudoLabels) -> None:
    """Write a store as one uncompressed `.npz` (layout in the module doc), atomically: a
    reader sees the old file or the whole new one.

    **Arguments:**

    - `path`: the file (used as given: no ".npz" is appended); replaced if it exists.
    - `labels`: a `PseudoLabels`.
    """
    if not isinstance(labels, PseudoLabels):
        raise TypeError(f"labels must be a PseudoLabels, got {type(labels).__name__}")
    arrays = _to_disk(labels)
    header = dict(format=np.str_(FORMAT), version=np.int64(VERSION),
                  num_classes=np.int64(labels.num_classes))  # fmt: skip
    atomic_write(path, lambda f: np.savez(f, **header, **arrays))


def load(path: str | os.PathLike) -> PseudoLabels:
    """Read a store written by `save`.

    **Arguments:** `path`: the file.

    **Returns:** the `PseudoLabels` it holds.

    **Raises:** ValueError naming the file when it is not a store, has another format
    version, or an array of the wrong shape, dtype or values (TypeError for a dtype).
    """
    arrays = _read_npz(path)
    header = _check_header(path, arrays)
    if arrays["ids"].dtype.kind != "S":
        raise ValueError(f"{path} holds an invalid pseudo-label store: ids must be UTF-8 bytes "
                         f"(dtype 'S'), got dtype {arrays['ids'].dtype}")
    arrays["ids"] = np.char.decode(arrays["ids"], "utf-8")
    try:
        return PseudoLabels(**{name: arrays[name] for name in _ARRAYS}, num_classes=header)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{path} holds an invalid pseudo-label store: {e}") from e


# ----------------------------------------------------------------------------- computing


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64[n, C] log-probabilities of float64[n, C] logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _top_k(log_p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest of each row of float64[n, C], largest first, equal values by lower
    class first. O(n C) (a partition, not a sort). Returns (intp[n, k], float64[n, k])."""
    n, num_classes = log_p.shape
    if k < num_classes:
        kth = -np.partition(-log_p, k - 1, axis=1)[:, k - 1 : k]  # the k-th largest value
        above, tie = log_p > kth, log_p == kth
        free = k - above.sum(axis=1, keepdims=True)  # places left for the ties
        keep = above | (tie & (np.cumsum(tie, axis=1, dtype=np.int32) <= free))
        classes = np.nonzero(keep)[1].reshape(n, k)  # ascending class in each row
    else:
        classes = np.broadcast_to(np.arange(num_classes), (n, num_classes))
    values = np.take_along_axis(log_p, classes, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(classes, order, axis=1), np.take_along_axis(values, order, axis=1)


def _class_dtype(num_classes: int) -> type:
    return np.int16 if num_classes <= _INT16_CLASSES else np.int32


# ----------------------------------------------------------------------------- checks


def _check_logits(logits) -> np.ndarray:
    """float64[n, C] of finite float logits, C >= 1."""
    check_rank("logits", logits, 2, "[n, C]")
    check_floating("logits", logits)
    if shape_of(logits)[1] < 1:
        raise ValueError(f"logits must have at least one class, got shape {shape_of(logits)}")
    logits = np.asarray(logits).astype(np.float64)
    if not np.isfinite(logits).all():
        raise ValueError("logits must be finite, got NaN or infinity")
    return logits


def _check_vector(name: str, x, n: int) -> np.ndarray:
    """`x` as a NumPy array of shape [n] (n = logits.shape[0])."""
    x = np.asarray(x)
    if x.shape != (n,):
        raise ValueError(f"{name} must have shape [n] = ({n},) (n = logits.shape[0]), "
                         f"got {x.shape}")  # fmt: skip
    return x


def _as_ids(ids: np.ndarray) -> np.ndarray:
    """ids as a NumPy "U" array (an empty one of another dtype is accepted)."""
    if ids.dtype.kind != "U" and ids.size:
        raise TypeError(f"ids must be strings (NumPy dtype 'U'), got dtype {ids.dtype}")
    return ids.astype(str)


def _check_rows(name: str, rows, n: int) -> np.ndarray:
    """int rows in [0, n) as a rank-1 intp array (an empty sequence is accepted as is)."""
    rows = np.asarray(rows)
    check_rank(name, rows, 1, "[n]")
    if rows.size == 0:
        return rows.astype(np.intp)
    check_integer(name, rows)
    lo, hi = int(rows.min()), int(rows.max())
    if lo < 0 or hi >= n:
        raise ValueError(f"{name} must be in [0, {n}), got min {lo}, max {hi}")
    return rows.astype(np.intp)


def _check_temperature(temperature) -> float:
    temperature = check_number("temperature", temperature, minimum=0.0, min_open=True)
    if not math.isfinite(temperature):
        raise ValueError(f"temperature must be > 0 and finite, got {temperature}")
    return temperature


def _check_array(name: str, x, dtype, shape: tuple, what: str) -> tuple[int, ...]:
    """`x` is a NumPy array of `dtype` and `shape` (None: any size; `what` names the axes).
    Returns its shape."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}")
    if x.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {x.dtype}")
    if x.ndim != len(shape) or any(s not in (None, a) for s, a in zip(shape, x.shape)):
        raise ValueError(f"{name} must have shape {what}, got {x.shape}")
    return x.shape


def _check_range(name: str, x: np.ndarray, lo, hi) -> None:
    """Every value of `x` in [lo, hi] (NaN fails)."""
    if x.size and not (x.min() >= lo and x.max() <= hi):
        raise ValueError(f"{name} must be in [{lo}, {hi}], got min {x.min()}, max {x.max()}")


def _check_fields(labels: PseudoLabels) -> None:
    """Every dtype and shape of a `PseudoLabels`, then the ranges of its values."""
    c = check_positive_int("num_classes", labels.num_classes)
    (n,) = _check_array("index", labels.index, np.int64, (None,), "[N]")
    _, k = _check_array("top_classes", labels.top_classes, _class_dtype(c), (n, None),
                        f"[N, k] with N = {n}")  # fmt: skip
    if not 1 <= k <= c:
        raise ValueError(f"top_classes must have shape [N, k] with k in [1, {c}], got {(n, k)}")
    ids_dtype = getattr(labels.ids, "dtype", None)
    if ids_dtype is None or ids_dtype.kind != "U":
        raise TypeError(f"ids must be a NumPy str ('U') array, got "
                        f"{ids_dtype or type(labels.ids).__name__}")  # fmt: skip
    _check_array("ids", labels.ids, ids_dtype, (n,), f"[N] = ({n},)")
    _check_array("classes", labels.classes, np.int32, (n,), f"[N] = ({n},)")
    _check_array("confidence", labels.confidence, np.float32, (n,), f"[N] = ({n},)")
    _check_array("top_log_probs", labels.top_log_probs, np.float16, (n, k),
                 f"[N, k] = {(n, k)}")  # fmt: skip
    _check_range("index", labels.index, 0, np.iinfo(np.int64).max)
    _check_range("classes", labels.classes, 0, c - 1)
    _check_range("top_classes", labels.top_classes, 0, c - 1)
    _check_range("confidence", labels.confidence, 0, 1)
    _check_range("top_log_probs", labels.top_log_probs, -np.inf, 0)


def _to_disk(labels: PseudoLabels) -> dict[str, np.ndarray]:
    """The arrays `save` writes: ids as UTF-8 bytes (a quarter of NumPy's 4-byte "U")."""
    arrays = {name: getattr(labels, name) for name in _ARRAYS}
    arrays["ids"] = np.char.encode(labels.ids, "utf-8")
    return arrays


def _read_npz(path) -> dict[str, np.ndarray]:
    """Every array of an `.npz` file; ValueError naming the file if it is not one."""
    with open(path, "rb") as f:
        try:
            z = np.load(f, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            return {name: z[name] for name in z.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path} is not a pseudo-label store written by save: {e}") from e


def _check_header(path, arrays: dict[str, np.ndarray]) -> int:
    """The num_classes of a loaded file, after checking its format, version and array names."""
    missing = [name for name in ("format", "version", "num_classes", *_ARRAYS)
               if name not in arrays]  # fmt: skip
    if missing or arrays["format"].shape != () or str(arrays["format"]) != FORMAT:
        raise ValueError(f"{path} is not a pseudo-label store written by save (format "
                         f"{FORMAT!r}; missing {missing})")  # fmt: skip
    version = arrays["version"]
    if version.shape != () or version.dtype.kind not in "iu" or int(version) != VERSION:
        raise ValueError(f"{path} has pseudo-label store version {version}; this nsjax "
                         f"reads version {VERSION}")  # fmt: skip
    num_classes = arrays["num_classes"]
    if num_classes.shape != () or num_classes.dtype.kind not in "iu":
        raise ValueError(f"{path} has num_classes {num_classes!r}, expected an int")
    return int(num_classes)
