"""r2n2-jax: 3D-R2N2 (Choy et al., ECCV 2016) in JAX/Flax.

Importing the package changes nothing in the process; command-line entry points call
`r2n2_jax.process_setup.setup` first (XLA:CPU convolution flag, huge-page malloc, EGL).
"""

__version__ = "0.1.0"
