"""The encoder's max-pool: its elementwise backward equals XLA's select-and-scatter, ties included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r2n2_jax.models import layers


@pytest.mark.parametrize("shape", [(2, 7, 8, 3), (1, 10, 9, 4), (3, 127, 127, 2)])
def test_max_pool_matches_nn_max_pool_forward_and_gradient_with_ties(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  x = jnp.round(x * 2) / 2  # Coarse values: many windows hold several equal maxima.
  x = x.at[:, :4, :4].set(1.0)  # And a flat patch, as a uniform background gives.
  ct = jax.random.normal(jax.random.key(1), layers._max_pool_2x2_pad1(x).shape)
  loss = lambda pool: jax.jit(jax.grad(lambda x_: jnp.sum(pool(x_) * ct)))
  np.testing.assert_array_equal(layers.max_pool_2x2_pad1(x), layers._max_pool_2x2_pad1(x))
  np.testing.assert_array_equal(loss(layers.max_pool_2x2_pad1)(x),
                                loss(layers._max_pool_2x2_pad1)(x))
  assert layers.max_pool_2x2_pad1(x).shape == (shape[0], shape[1] // 2 + 1, shape[2] // 2 + 1,
                                                shape[3])
