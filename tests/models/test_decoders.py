"""The sub-pixel decoders equal the straightforward unpool -> conv form of DESIGN.md section 2."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r2n2_jax.models.decoders import DECODERS
from r2n2_jax.models.layers import leaky_relu, unpool_3d

FILTERS = (8, 8, 4, 4, 2)  # Small, with the structure of (128, 128, 64, 32, 2).


def _conv(p, x):
  """'SAME' 3D conv + bias straight from the spec, on whatever grid it is given."""
  k = p["kernel"].shape[0]
  y = jax.lax.conv_general_dilated(x, p["kernel"], (1, 1, 1), [(k // 2, k // 2)] * 3,
                                   dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
  return y + p["bias"]


def _reference_simple(p, h):
  x = h
  for i in range(1, 4):
    x = leaky_relu(_conv(p[f"conv{i}"], unpool_3d(x)))
  x = leaky_relu(_conv(p["conv4"], x))
  return _conv(p["conv5"], x)


def _reference_residual(p, h):
  x = h
  for s in range(1, 4):
    u = unpool_3d(x)
    y = leaky_relu(_conv(p[f"conv{s}a"], u))
    y = leaky_relu(_conv(p[f"conv{s}b"], y))
    x = y + (_conv(p[f"conv{s}c"], u) if f"conv{s}c" in p else u)
  a = leaky_relu(_conv(p["conv4a"], x))
  b = leaky_relu(_conv(p["conv4b"], a))
  return _conv(p["conv5"], b + _conv(p["conv4c"], a))


REFERENCES = {"simple": _reference_simple, "residual": _reference_residual}


# Two of the four pairs in the fast tier: test_layers_conv3d checks xla against depth2d per layer.
@pytest.mark.parametrize("name,impl", [
    ("simple", "xla"), ("residual", "depth2d"),
    pytest.param("simple", "depth2d", marks=pytest.mark.slow),
    pytest.param("residual", "xla", marks=pytest.mark.slow)])
def test_decoder_equals_unpool_then_conv(name, impl):
  h = jax.random.normal(jax.random.key(0), (1, 4, 4, 4, FILTERS[0]))
  decoder = DECODERS[name](filters=FILTERS, conv3d_impl=impl)
  params = jax.jit(decoder.init)(jax.random.key(1), h)["params"]
  cot = jax.random.normal(jax.random.key(2), (1, 32, 32, 32, 2))

  def fast(p, x):
    return decoder.apply({"params": p}, x)

  def loss(fn):
    return lambda p, x: jnp.sum(fn(p, x) * cot)

  np.testing.assert_allclose(jax.jit(fast)(params, h), jax.jit(REFERENCES[name])(params, h),
                             rtol=1e-5, atol=1e-5)
  got = jax.jit(jax.grad(loss(fast), argnums=(0, 1)))(params, h)
  want = jax.jit(jax.grad(loss(REFERENCES[name]), argnums=(0, 1)))(params, h)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(jnp.abs(w).max()))
