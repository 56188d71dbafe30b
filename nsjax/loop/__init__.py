"""The Noisy Student loop over generations: a supervised teacher, then students trained on
labeled + balanced pseudo-labeled data, each the next generation's teacher (`iterate`,
configured by an `IterateConfig`); every stage resumable."""

from nsjax.loop._iterate import IterateConfig, iterate

__all__ = ["IterateConfig", "iterate"]
