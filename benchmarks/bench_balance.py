"""Class balancing at pseudo-label scale: `balance_classes` against one `np.argsort` of the
confidences (the least a sort-based balancer has to do), timed in the same run.

Records mimic the paper's filtering of JFT: 1000 classes drawn uniformly (int32), confidences
(float32) from Beta(1.6, 1), shaped like a teacher's max softmax probability (~85% >= 0.3), and
per_class at the ImageNet recipe's ratio (130k per class from ~300M images: 0.43 N / 1000).
Peak memory is measured with tracemalloc in a separate call and reported over the inputs'
bytes (8 per record).
"""

from __future__ import annotations

import tracemalloc

import numpy as np

from benchmarks._harness import Figure, Options, register, time_call
from nsjax.balance import balance_classes

NUM_CLASSES = 1000
PAPER_RATIO = 130_000 / 300_000_000 * NUM_CLASSES  # per_class = PAPER_RATIO * N / NUM_CLASSES


def _records(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """int32[n] classes and float32[n] confidences, generated in slices to bound memory."""
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, NUM_CLASSES, n, dtype=np.int32)
    conf = np.empty(n, np.float32)
    step = 1 << 23
    for s in range(0, n, step):
        conf[s : s + step] = rng.beta(1.6, 1.0, min(step, n - s))
    return cls, conf


def _peak_bytes(fn) -> int:
    """Peak bytes allocated (NumPy reports to tracemalloc) during one call of fn."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@register("balance")
def bench_balance(opts: Options) -> list[Figure]:
    sizes = [10**6] if opts.quick else [10**7]
    if opts.large:
        sizes.append(10**8)
    figures = []
    for n in sizes:
        cls, conf = _records(n)
        input_bytes = cls.nbytes + conf.nbytes
        per_class = round(PAPER_RATIO * n / NUM_CLASSES)
        repeats = 1 if n >= 10**8 else opts.repeats
        peer = time_call(lambda: np.argsort(conf), repeats=repeats, warmup=0 if n >= 10**8 else 1)
        for mode in ("topk", "official"):
            def run(mode=mode):
                return balance_classes(cls, conf, per_class=per_class, mode=mode)

            seconds = time_call(run, repeats=repeats)
            rows = run().indices.size
            peak = _peak_bytes(run)
            figures.append(Figure(
                name=f"balance_classes[{mode}] N={n:.0e}",
                seconds=seconds,
                items=n,
                item_unit="record",
                peer="np.argsort(confidence)",
                peer_seconds=peer,
                extra={
                    "time_over_argsort": round(seconds / peer, 3),
                    "peak_mem_over_inputs": round(peak / input_bytes, 3),
                    "input_bytes": input_bytes,
                    "per_class": per_class,
                    "rows": rows,
                },
            ))
        del cls, conf
    return figures
