"""Pseudo-labels: a teacher's predictions on unlabeled images, stored compactly and read back as
hard labels, soft labels at any temperature, or confidences for balancing.

- `label(teacher, source, out_dir, ...)`: the labelling job (sharded, resumable, per process);
  `read_labels(out_dir)` the finished store.
- `PseudoLabels`: per image its source index, id, predicted class, confidence and top-k
  log-probabilities; `from_logits`, `concatenate`, `save`, `load`; `store.targets(rows)`
  the student's targets (`SoftTargets`: soft labels rebuilt per batch).
- `balance(store, per_class=...)`: the balanced rows the student reads
  (`nsjax.balance.balance_classes`), `EmptySelectionError` when too few;
  `save_balance`/`load_balance`/`balance_report`.
"""

from nsjax.pseudo._balance import (
    EmptySelectionError,
    balance,
    balance_report,
    load_balance,
    save_balance,
)
from nsjax.pseudo._label import label, read_labels, shard_ranges
from nsjax.pseudo._store import (
    PseudoLabels,
    SoftTargets,
    concatenate,
    from_logits,
    load,
    save,
)

__all__ = ["EmptySelectionError", "PseudoLabels", "SoftTargets", "balance", "balance_report", "concatenate",
           "from_logits", "label", "load", "load_balance", "read_labels", "save", "save_balance",
           "shard_ranges"]  # fmt: skip
