"""Pseudo-labels: a teacher's predictions on unlabeled images, stored compactly and read back as
hard labels, soft labels at any temperature, or confidences for balancing.

- `label(teacher, source, out_dir, ...)`: the labelling job (sharded, resumable, per process);
  `read_labels(out_dir)` the finished store.
- `PseudoLabels`: per image its source index, id, predicted class, confidence and top-k
  log-probabilities; `from_logits`, `concatenate`, `save`, `load`.
"""

from nsjax.pseudo._label import label, read_labels, shard_ranges
from nsjax.pseudo._store import PseudoLabels, concatenate, from_logits, load, save

__all__ = ["PseudoLabels", "concatenate", "from_logits", "label", "load", "read_labels", "save",
           "shard_ranges"]  # fmt: skip
