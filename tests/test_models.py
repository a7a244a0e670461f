"""The R2N2 model: the paper's parameter counts and view-mask invariance."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from r2n2_jax.models import build_model


def _model_config(encoder="simple", decoder="simple", cell="gru", kernel_size=3):
  return ml_collections.ConfigDict(dict(encoder=encoder, decoder=decoder, cell=cell,
                                        kernel_size=kernel_size, conv3d_impl="auto"))


def _num_params(model_config):
  model = build_model(model_config)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1, 127, 127, 3)),
                          jnp.ones((1, 1), bool))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


@pytest.mark.parametrize("encoder,cell,kernel_size,expected", [
    ("simple", "gru", 3, 32_207_266),
    ("simple", "lstm", 3, 32_207_266),
    ("simple", "gru", 1, 30_929_314),
    ("simple", "lstm", 1, 30_929_314),
    ("residual", "gru", 3, 35_968_706),
])
def test_parameter_counts_match_the_paper_networks(encoder, cell, kernel_size, expected):
  assert _num_params(_model_config(encoder, encoder, cell, kernel_size)) == expected


@pytest.mark.parametrize("encoder,cell,kernel_size", [
    ("simple", "gru", 3), ("residual", "lstm", 1)])
def test_masked_views_change_nothing_with_mixed_view_counts(encoder, cell, kernel_size):
  """A batch with 1 and 3 real views (padding of different content) equals each example alone."""
  model = build_model(_model_config(encoder, encoder, cell, kernel_size))
  rng = np.random.default_rng(0)
  views = jnp.asarray(rng.random((2, 3, 127, 127, 3), np.float32))
  mask = jnp.array([[True, False, False], [True, True, True]])
  variables = jax.jit(model.init)(jax.random.key(0), views, mask)
  apply = jax.jit(model.apply)

  logits = apply(variables, views, mask)
  assert logits.shape == (2, 32, 32, 32, 2)
  # Replacing what the mask hides by other images changes nothing.
  scrambled = views.at[0, 1:].set(jnp.asarray(rng.random((2, 127, 127, 3), np.float32)))
  np.testing.assert_array_equal(apply(variables, scrambled, mask), logits)
  # Each example on its own, with only its real views, gives the same logits.
  alone_1 = apply(variables, views[:1, :1], mask[:1, :1])
  alone_3 = apply(variables, views[1:], mask[1:])
  np.testing.assert_allclose(logits[:1], alone_1, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(logits[1:], alone_3, atol=1e-4, rtol=1e-4)
  # ...and the views do matter: one view instead of three gives another prediction.
  assert np.abs(np.asarray(apply(variables, views[1:, :1], mask[1:, :1]) - alone_3)).max() > 1e-3
