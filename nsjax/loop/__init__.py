"""The Noisy Student loop over generations: a supervised teacher, then students trained on
labeled + balanced pseudo-labeled data, each the next generation's teacher (`iterate`,
configured by an `IterateConfig`); every stage resumable; `finetune` the FixRes stage. `write_report` / `format_table`: the
run's report and table."""

from nsjax.loop._finetune import finetune
from nsjax.loop._iterate import IterateConfig, iterate
from nsjax.loop._report import format_table, write_report

__all__ = ["IterateConfig", "finetune", "format_table", "iterate", "write_report"]
