"""Student noise: dropout, stochastic depth (drop-path) and its per-block rate rule."""

from nsjax.noise._depth import drop_path, dropout, stochastic_depth_rates

__all__ = ["drop_path", "dropout", "stochastic_depth_rates"]
