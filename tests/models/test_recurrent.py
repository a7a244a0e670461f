"""The recurrent cells' 3D convs: the im2col matmul form equals lax's 3D conv, values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r2n2_jax.models import recurrent


@pytest.mark.parametrize("k", [1, 3])
def test_same_conv3d_as_matmul_matches_lax_conv(k):
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 4, 8))
  kernel = jax.random.normal(jax.random.key(1), (k, k, k, 8, 6))
  ct = jax.random.normal(jax.random.key(2), (2, 4, 4, 4, 6))

  def lax_conv(x_, k_):
    return jax.lax.conv_general_dilated(x_, k_, (1, 1, 1), "SAME",
                                        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))

  def grads(conv):
    return jax.grad(lambda x_, k_: jnp.sum(conv(x_, k_) * ct), argnums=(0, 1))(x, kernel)

  np.testing.assert_allclose(recurrent.same_conv3d_as_matmul(x, kernel), lax_conv(x, kernel),
                             rtol=1e-5, atol=1e-5)
  for got, want in zip(grads(recurrent.same_conv3d_as_matmul), grads(lax_conv)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


class _NNConvGate(nn.Module):
  """GateConv written with nn.Conv: what checkpoints were laid out and initialised as."""

  @nn.compact
  def __call__(self, h):
    y = nn.Conv(16, (3, 3, 3), use_bias=False, kernel_init=recurrent._conv_init, name="conv")(h)
    return y + self.param("bias", jax.nn.initializers.constant(0.1), (16,))


def test_gate_conv_parameters_and_output_are_those_of_nn_conv():
  h = jax.random.normal(jax.random.key(3), (1, 4, 4, 4, 16))
  gate = recurrent.GateConv(3, channels=16)
  params = gate.init(jax.random.key(0), h)
  reference = _NNConvGate().init(jax.random.key(0), h)
  assert jax.tree.structure(params) == jax.tree.structure(reference)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(gate.apply(params, h), _NNConvGate().apply(reference, h),
                             rtol=1e-5, atol=1e-5)


def test_gate_input_projection_is_three_dense_layers_with_the_original_init():
  """Per gate: Dense(features -> 4^3 x C, no bias), weights N(0, sqrt(2 / mean fan))."""
  features = jax.random.normal(jax.random.key(4), (2, 3, 64))
  projection = recurrent.GateInputProjection(channels=32)
  params = projection.init(jax.random.key(0), features)
  kernel = params["params"]["kernel"]
  cells = recurrent.GRID ** 3 * 32
  assert kernel.shape == (recurrent.NUM_GATES, cells, 64)
  np.testing.assert_allclose(np.std(kernel), np.sqrt(2.0 / ((64 + cells) / 2)), rtol=0.05)
  out = projection.apply(params, features)
  assert out.shape == (2, 3, recurrent.NUM_GATES, 4, 4, 4, 32)
  for g in range(recurrent.NUM_GATES):
    dense = features @ kernel[g].T  # (2, 3, cells)
    np.testing.assert_allclose(out[:, :, g].reshape(2, 3, cells), dense, rtol=1e-5, atol=1e-5)
