"""The training engine: one config, one train state, jitted sharded steps, the recipe, checkpoints
and the `fit` loop."""

from nsjax.train._config import TrainConfig

__all__ = ["TrainConfig"]
