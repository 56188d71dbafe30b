"""nsjax: Noisy Student self-training (Xie et al., 2019) in pure-functional JAX.

Subpackages, each importable on its own: `nsjax.losses`, `nsjax.noise`, `nsjax.balance`,
`nsjax.fixres`. See docs/api.md.
"""

__version__ = "0.1.0"
