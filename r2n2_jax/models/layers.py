"""Building blocks shared by the encoders, the recurrent cells and the decoders.

Initialisation follows the original 3D-R2N2: weights N(0, sqrt(2 / n)) with
n = (fan_in + fan_out) / 2, biases 0.1.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

LEAKY_SLOPE = 0.01
BIAS_INIT = 0.1

# Var = 2 / ((fan_in + fan_out) / 2): variance scaling with scale 2 over the mean fan.
weight_init = jax.nn.initializers.variance_scaling(2.0, "fan_avg", "normal")
bias_init = jax.nn.initializers.constant(BIAS_INIT)


def leaky_relu(x):
  return nn.leaky_relu(x, negative_slope=LEAKY_SLOPE)


Conv = functools.partial(
    nn.Conv, padding="SAME", kernel_init=weight_init, bias_init=bias_init)
Dense = functools.partial(nn.Dense, kernel_init=weight_init, bias_init=bias_init)


def max_pool_2x2_pad1(x):
  """2x2 stride-2 max-pool with 1 pixel of padding per side: (B, H, W, C) -> (B, H//2+1, ...)."""
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding=((1, 1), (1, 1)))


def unpool_3d(x):
  """2x2x2 zero-insertion unpooling, (B, D, H, W, C) -> (B, 2D, 2H, 2W, C).

  Each input value lands on the first corner of its 2x2x2 block, the rest are zeros.
  """
  zero = jnp.zeros((), x.dtype)
  return jax.lax.pad(x, zero, [(0, 0, 0)] + [(0, 1, 1)] * 3 + [(0, 0, 0)])
