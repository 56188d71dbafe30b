"""Test-wide JAX settings: two simulated CPU devices (sharding tests), rank promotion is an
error, and XLA's CPU fusion emitters off: they double the compile time of a train step (17.7 s
-> 9.3 s for a width-0.25 B0's gradient, same run time), and compiling is most of this suite."""

import os

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_use_fusion_emitters=false"]).strip()

import jax  # noqa: E402  (after XLA_FLAGS: the backend reads them once)

jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_numpy_rank_promotion", "raise")
