"""The conv implementations and the sub-pixel unpool+conv equal the plain lax / flax forms."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r2n2_jax.models import layers


def _lax_conv3d(x, kernel, padding):
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1, 1), padding, dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


def _value_and_grads(fn, x, kernel):
  """fn(x, kernel), and the gradients of <fn(x, kernel), fixed random cotangent> w.r.t. both."""
  y = fn(x, kernel)
  cot = jax.random.normal(jax.random.key(7), y.shape)
  grads = jax.grad(lambda x_, k_: jnp.sum(fn(x_, k_) * cot), argnums=(0, 1))(x, kernel)
  return (y,) + grads


def _inputs(shape_x, shape_k):
  kx, kk = jax.random.split(jax.random.key(0))
  return jax.random.normal(kx, shape_x), 0.2 * jax.random.normal(kk, shape_k)


@pytest.mark.parametrize("impl", ["xla", "depth2d"])
@pytest.mark.parametrize("ksize,padding", [
    ((3, 3, 3), ((1, 1),) * 3),
    ((2, 1, 2), ((0, 1), (0, 0), (0, 1))),
    ((1, 1, 1), ((0, 0),) * 3),
])
@pytest.mark.parametrize("channels", [(3, 4), (8, 2)])
def test_conv3d_matches_lax_forward_and_grads(impl, ksize, padding, channels):
  x, kernel = _inputs((2, 5, 6, 4, channels[0]), ksize + channels)
  got = _value_and_grads(lambda a, k: layers.conv3d(a, k, padding, impl), x, kernel)
  want = _value_and_grads(lambda a, k: _lax_conv3d(a, k, padding), x, kernel)
  for g, w in zip(got, want):
    assert g.shape == w.shape
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["xla", "depth2d"])
@pytest.mark.parametrize("k", [3, 1])
def test_unpool_conv3d_is_conv_of_unpooled(impl, k):
  x, kernel = _inputs((2, 3, 3, 3, 5), (k, k, k, 5, 4))
  same = ((k // 2, k // 2),) * 3
  got = _value_and_grads(lambda a, w: layers.unpool_conv3d(a, w, impl), x, kernel)
  want = _value_and_grads(lambda a, w: _lax_conv3d(layers.unpool_3d(a), w, same), x, kernel)
  assert got[0].shape == (2, 6, 6, 6, 4)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_unpool_conv3d_rejects_other_kernels():
  x, kernel = _inputs((1, 2, 2, 2, 3), (2, 2, 2, 3, 4))
  with pytest.raises(ValueError, match="1x1x1 and 3x3x3"):
    layers.unpool_conv3d(x, kernel)


def test_unknown_impl_raises():
  x, kernel = _inputs((1, 2, 2, 2, 3), (1, 1, 1, 3, 4))
  with pytest.raises(ValueError, match="conv3d_impl"):
    layers.conv3d(x, kernel, ((0, 0),) * 3, "cudnn")


def test_auto_impl_follows_backend():
  expected = "depth2d" if jax.default_backend() == "cpu" else "xla"
  assert layers.resolve_conv3d_impl("auto") == expected


@pytest.mark.parametrize("k", [3, 1])
def test_conv3d_module_params_equal_plain_conv(k):
  """Same names, shapes and initial values as the flax Conv it replaces: checkpoints carry over."""
  x = jnp.ones((1, 4, 4, 4, 6))
  rng = jax.random.key(3)
  flax_conv = nn.Conv(5, (k, k, k), kernel_init=layers.weight_init, bias_init=layers.bias_init)
  plain = flax_conv.init(rng, x)
  ours = layers.Conv3D(5, kernel_size=k, unpool=True).init(rng, x)
  assert jax.tree.structure(plain) == jax.tree.structure(ours)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(ours)):
    np.testing.assert_array_equal(a, b)
  y = layers.Conv3D(5, kernel_size=k, unpool=True).apply(ours, x)
  want = flax_conv.apply(plain, layers.unpool_3d(x))
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_conv2d_module_params_equal_flax_conv():
  x = jnp.ones((1, 9, 9, 3))
  rng = jax.random.key(4)
  flax_conv = nn.Conv(6, (3, 3), kernel_init=layers.weight_init, bias_init=layers.bias_init)
  plain = flax_conv.init(rng, x)
  ours = layers.Conv(6, (3, 3)).init(rng, x)
  assert jax.tree.structure(plain) == jax.tree.structure(ours)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(ours)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(layers.Conv(6, (3, 3)).apply(ours, x), flax_conv.apply(plain, x),
                             rtol=1e-6)
