"""r2n2-jax: 3D-R2N2 (Choy et al., ECCV 2016) in JAX/Flax."""

__version__ = "0.1.0"
