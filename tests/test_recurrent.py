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
