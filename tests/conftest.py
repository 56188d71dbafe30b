"""Test-wide JAX settings: two simulated CPU devices (sharding tests), rank promotion is an error."""

import jax

jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_numpy_rank_promotion", "raise")
