"""The R2N2 model: the paper's parameter counts and view-mask invariance."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from data_prep import records
from r2n2_jax import checkpoints
from r2n2_jax import config_lib
from r2n2_jax import input_pipeline
from r2n2_jax import metrics
from r2n2_jax.models import R2N2
from r2n2_jax.models import build_model
from r2n2_jax.models.encoders import ENCODERS

# The `:narrow` width: the paper's structure (standardisation, masked scan, shortcuts) at a
# fraction of its work, for the fast tier; the paper's widths run in the slow tier.
NARROW = default.get_config("narrow").model.width


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


@pytest.mark.parametrize("encoder,expected", [("simple", 505_302), ("residual", 564_330)])
def test_width_scales_every_layer_but_the_two_classes(encoder, expected):
  """`model.width` multiplies each layer's channels; the structure (shortcuts included) stays."""
  config = _model_config(encoder, encoder)
  config.width = NARROW
  assert _num_params(config) == expected
  params = checkpoints.abstract_params(config)
  paper = checkpoints.abstract_params(_model_config(encoder, encoder))
  assert jax.tree.structure(params) == jax.tree.structure(paper)
  # (3 gates, 4^3 cells x 16 channels, 128 features) instead of (3, 4^3 x 128, 1024).
  assert params["recurrent"]["input_projection"]["kernel"].shape == (3, 1024, 128)
  assert params["decoder"]["conv5"]["kernel"].shape[-1] == 2
  config.width = 0.0
  with pytest.raises(ValueError, match="config.model.width=0.0"):
    config_lib.validate_model(ml_collections.ConfigDict({"model": config}))


@pytest.mark.parametrize("encoder,cell,kernel_size,width", [
    ("simple", "gru", 3, NARROW), ("residual", "lstm", 1, NARROW),
    pytest.param("simple", "gru", 3, 1.0, marks=pytest.mark.slow, id="paper-width")])
def test_masked_views_change_nothing_with_mixed_view_counts(encoder, cell, kernel_size, width):
  """A batch with 1 and 3 real views (padding of different content) equals each example alone."""
  model = R2N2(encoder, encoder, cell, kernel_size, width=width)
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
  one_view = apply(variables, views[1:, :1], mask[1:, :1])
  assert np.abs(np.asarray(one_view - alone_3)).max() > 1e-2 * float(np.abs(logits).max())


def test_encoder_sees_standardised_views():
  """The encoder inside the model gets (views - input_mean) / input_std, per channel."""
  model = R2N2(input_mean=(0.9, 0.8, 0.7), input_std=(0.1, 0.2, 0.4), width=NARROW)
  views = jnp.asarray(np.random.default_rng(0).random((1, 2, 127, 127, 3)), jnp.float32)
  mask = jnp.ones((1, 2), bool)
  variables = jax.jit(model.init)(jax.random.key(0), views, mask)
  _, state = jax.jit(functools.partial(
      model.apply, mutable=["intermediates"],
      capture_intermediates=lambda m, _: m.name == "encoder"))(variables, views, mask)
  inside = state["intermediates"]["encoder"]["__call__"][0]
  narrow_encoder = ENCODERS["simple"]((12, 16, 32, 32, 32, 32), 128)  # The paper's / 8.
  encoder = jax.jit(lambda x: narrow_encoder.apply({"params": variables["params"]["encoder"]}, x))
  standardised = (views[0] - jnp.asarray([0.9, 0.8, 0.7])) / jnp.asarray([0.1, 0.2, 0.4])
  np.testing.assert_allclose(inside, encoder(standardised), rtol=1e-5, atol=1e-5)
  assert not np.allclose(inside, encoder(views[0]), atol=1e-3)


def test_default_normalisation_fits_procedural_views(tiny_config):
  """The default input_mean/std are the procedural views' statistics, and with them the initial
  network is neither blind to the image nor saturated (DESIGN.md departure, see r2n2.py)."""
  data_dir = input_pipeline.dataset_dir(tiny_config)
  mean, std = input_pipeline.view_statistics(data_dir)
  np.testing.assert_allclose(mean, tiny_config.model.input_mean, atol=0.03)
  np.testing.assert_allclose(std, tiny_config.model.input_std, rtol=0.2)
  source = records.load_split(data_dir, "train")
  views = np.stack([input_pipeline.preprocess_eval_views(source[i]["views"], [0])
                    for i in range(16)])  # (16, 1, 127, 127, 3)

  model = build_model(tiny_config.model)
  mask = np.ones(views.shape[:2], bool)
  variables = model.init(jax.random.key(0), views[:1], mask[:1])
  _, state = model.apply(variables, views, mask, mutable=["intermediates"],
                         capture_intermediates=lambda m, _: m.name in ("encoder",
                                                                       "input_projection"))
  features = np.asarray(state["intermediates"]["encoder"]["__call__"][0])
  gates = np.asarray(state["intermediates"]["recurrent"]["input_projection"]["__call__"][0])
  assert features.std(0).mean() > 0.2 * np.abs(features).mean()  # Features depend on the view.
  assert np.mean(np.abs(gates) > 4) < 0.01  # Sigmoid/tanh gates are not saturated.


@pytest.mark.slow  # Two full-size compilations (~20 s).
def test_bfloat16_compute_stays_close_to_float32():
  """The opt-in bf16 mode: the same float32 parameters, float32 logits, probabilities close to
  float32's, finite float32 gradients; unknown dtypes are refused."""
  config = _model_config(kernel_size=3)
  rng = np.random.default_rng(0)
  views = jnp.asarray(rng.random((1, 2, 127, 127, 3)), jnp.float32)
  mask = jnp.ones((1, 2), bool)
  voxels = jnp.asarray(rng.random((1, 32, 32, 32)) < 0.2)
  variables = build_model(config).init(jax.random.key(0), views, mask)
  fp32 = build_model(config).apply(variables, views, mask)
  config.dtype = "bfloat16"
  model = build_model(config)
  bf16 = model.apply(variables, views, mask)
  assert bf16.dtype == jnp.float32
  diff = np.abs(metrics.occupancy_probability(bf16) - metrics.occupancy_probability(fp32))
  assert diff.max() < 0.02 and diff.mean() < 0.005
  grads = jax.grad(lambda p: metrics.voxel_cross_entropy(
      model.apply({"params": p}, views, mask), voxels).mean())(variables["params"])
  for g in jax.tree.leaves(grads):
    assert g.dtype == jnp.float32 and np.all(np.isfinite(g))
  config.dtype = "float16"
  with pytest.raises(ValueError, match="config.model.dtype"):
    build_model(config)
