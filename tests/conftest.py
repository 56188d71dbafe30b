"""Test-wide JAX settings: two simulated CPU devices (sharding tests), rank promotion is an
error, and XLA's CPU fusion emitters off: they double the compile time of a train step (17.7 s
-> 9.3 s for a width-0.25 B0's gradient, same run time), and compiling is most of this suite.

Programs that several tests compile alike (the same model, the same RandAugment shapes) are
compiled once: JAX's persistent compilation cache, in one folder of the temporary directory
that pytest-xdist's workers share (its key holds the program, the flags and jax's version, so
a stale entry is never used). `NSJAX_TEST_JAX_CACHE` names another folder."""

import os
import tempfile

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_use_fusion_emitters=false"]).strip()
CACHE = os.environ.get("NSJAX_TEST_JAX_CACHE",
                       os.path.join(tempfile.gettempdir(), "nsjax-test-jax-cache"))

import jax  # noqa: E402  (after XLA_FLAGS: the backend reads them once)

jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_compilation_cache_dir", CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
