"""r2n2-jax: 3D-R2N2 (Choy et al., ECCV 2016) in JAX/Flax."""

from r2n2_jax import cpu_flags

__version__ = "0.1.0"

cpu_flags.prefer_eigen_convolutions()
