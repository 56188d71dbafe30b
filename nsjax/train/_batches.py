"""In-memory arrays as grain pipelines: shuffled, repeated, per-process batches whose iterator
state is a small dict (checkpointed with the run), and padded evaluation batches.

Sources too large for memory (image folders, ArrayRecord shards) come from `nsjax.data`; this
module covers arrays already in memory (NumPy, `.npz`), which is what `fit` takes directly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import grain
import jax
import numpy as np

from nsjax import _checks


def check_arrays(name: str, arrays: Mapping[str, np.ndarray], *, image_keys: tuple[str, ...]
                 ) -> int:  # fmt: skip
    """Every array of `arrays` has the same length `N >= 1`; image entries are uint8 NHWC.
    Returns `N`."""
    if not isinstance(arrays, Mapping) or not arrays:
        raise TypeError(f"{name} must be a non-empty mapping of arrays, got {type(arrays).__name__}")
    lengths = {k: _checks.shape_of(v)[0] if _checks.shape_of(v) else None for k, v in arrays.items()}
    if len(set(lengths.values())) != 1 or None in lengths.values():
        raise ValueError(f"{name} must hold arrays of one length N (one row per example), got "
                         f"lengths {lengths}")
    for key in image_keys:
        if key in arrays:
            _checks.check_images(f"{name}[{key!r}]", arrays[key], dtypes=("uint8",), min_side=32)
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError(f"{name} must hold at least one example, got 0")
    return n


def train_batches(arrays: Mapping[str, np.ndarray], batch_size: int, *, seed: int
                  ) -> grain.DatasetIterator:  # fmt: skip
    """Endless shuffled batches of this process's share of `arrays`.

    Each of `P` processes reads rows `process_index::P` and yields `batch_size / P` of them per
    step; every epoch is reshuffled (grain's per-epoch seeds) and batches run across epoch
    boundaries, as `repeat().batch()` in the official input pipeline.

    **Arguments:**

    - `arrays`: a mapping of arrays with one row per example (e.g. `images` uint8
      `[N, H, W, 3]`, `labels` int `[N]`).
    - `batch_size`: the global batch size, a multiple of the process count.
    - `seed`: the shuffle seed.

    **Returns:** a grain iterator of dicts of NumPy arrays `[batch_size / P, ...]`; its
    `get_state()` / `set_state()` resume exactly.
    """
    processes, index = jax.process_count(), jax.process_index()
    if batch_size % processes:
        raise ValueError(f"batch_size must be a multiple of the process count {processes}, "
                         f"got {batch_size}")
    n = _checks.shape_of(next(iter(arrays.values())))[0]
    rows = grain.MapDataset.range(n)[index::processes]
    if len(rows) < batch_size // processes:
        raise ValueError(f"the data must hold at least one batch per process: {n} rows over "
                         f"{processes} processes is fewer than batch {batch_size}")
    ds = rows.shuffle(seed=seed).repeat().batch(batch_size // processes, drop_remainder=True)
    return iter(ds.map(lambda idx: {k: np.asarray(v[idx]) for k, v in arrays.items()}))


def eval_batches(arrays: Mapping[str, np.ndarray], batch_size: int
                 ) -> Iterator[dict[str, np.ndarray]]:  # fmt: skip
    """This process's share of `arrays` in order, in batches of `batch_size / P` rows, the last
    one padded (zeros) with `mask` False on the padding: no image is dropped or counted twice."""
    processes, index = jax.process_count(), jax.process_index()
    local = batch_size // processes
    n = _checks.shape_of(next(iter(arrays.values())))[0]
    mine = np.arange(index, n, processes)
    per_process = -(-n // processes)
    for start in range(0, max(per_process, 1), local):
        idx = mine[start:start + local]
        pad = local - len(idx)
        batch = {k: np.concatenate([np.asarray(v)[idx],
                                    np.zeros((pad,) + np.shape(v)[1:], np.asarray(v).dtype)])
                 for k, v in arrays.items()}  # fmt: skip
        batch["mask"] = np.arange(local) < len(idx)
        yield batch
