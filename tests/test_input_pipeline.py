"""Input pipeline: view draws, masks, crops, backgrounds, determinism by step, host shards."""

import zlib

import grain
import jax
import numpy as np
import pytest

from data_prep import records
from r2n2_jax import input_pipeline


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_train_batches_shapes_view_counts_and_backgrounds(tiny_config):
  config = tiny_config
  data_dir = input_pipeline.dataset_dir(config)
  batches = _take(input_pipeline.create_train_iterator(config, data_dir), 12)
  counts = set()
  for batch in batches:
    # RGBA crops and their background colours; the step composites (tiny: no view buckets).
    assert batch["views"].shape == (config.batch_size, config.max_views, 127, 127, 4)
    assert batch["background"].shape == (config.batch_size, config.max_views, 3)
    assert batch["views"].dtype == np.uint8 and batch["voxels"].shape == (config.batch_size,) + (32,) * 3
    batch = dict(batch, views=input_pipeline.composite_background(batch["views"], batch["background"]))
    n = batch["view_mask"].sum(axis=1)
    assert (n == n[0]).all() and 1 <= n[0] <= config.max_views  # One n per batch by default.
    counts.add(int(n[0]))
    # Real views come first; padding is zeros; real views have a light background in the corner.
    assert (batch["view_mask"][:, :n[0]]).all()
    assert (batch["views"][:, n[0]:] == 0).all()
    corners = batch["views"][:, :n[0], 0, 0]
    assert (corners >= 225).all()
  assert counts == set(range(1, config.max_views + 1))


def test_train_views_are_distinct_crops_of_the_record(tiny_config):
  """Every drawn view is a 127 crop of a different stored view of the same object."""
  config = tiny_config.copy_and_resolve_references()
  config.batch_size = 1
  config.per_example_views = True
  data_dir = input_pipeline.dataset_dir(config)
  source = records.load_split(data_dir, "train")
  by_voxels = {source[i]["voxels"].tobytes(): source[i] for i in range(len(source))}
  for batch in _take(input_pipeline.create_train_iterator(config, data_dir), 6):
    record = by_voxels[batch["voxels"][0].tobytes()]
    stored = record["views"]  # (V, 137, 137, 4)
    matched = []
    rgb = input_pipeline.composite_background(batch["views"], batch["background"])
    for view in rgb[0][batch["view_mask"][0]]:
      # Opaque pixels of a crop equal the stored RGB at one offset of one view.
      hits = [(v, t, l) for v in range(len(stored)) for t in range(11) for l in range(11)
              if np.array_equal(np.where(stored[v, t:t + 127, l:l + 127, 3:] == 255,
                                         stored[v, t:t + 127, l:l + 127, :3], 0),
                                np.where(stored[v, t:t + 127, l:l + 127, 3:] == 255, view, 0))]
      assert hits, "a training view is not a crop of its record"
      matched.append(hits[0][0])
    assert len(set(matched)) == len(matched)


def test_training_data_is_a_function_of_the_step(tiny_config):
  """Resuming at step s reads exactly what an uninterrupted run reads from step s on."""
  data_dir = input_pipeline.dataset_dir(tiny_config)
  straight = _take(input_pipeline.create_train_iterator(tiny_config, data_dir), 7)
  resumed = _take(input_pipeline.create_train_iterator(tiny_config, data_dir, start_step=4), 3)
  for a, b in zip(straight[4:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_hosts_read_disjoint_shares(tiny_config):
  config = tiny_config.copy_and_resolve_references()
  config.batch_size = 2
  data_dir = input_pipeline.dataset_dir(config)
  num_train = len(records.load_split(data_dir, "train"))
  seen = []
  for process_index in range(2):
    it = input_pipeline.create_train_iterator(config, data_dir, 0, process_index, 2)
    seen.append({b["voxels"][0].tobytes() for b in _take(it, num_train // 2)})
    assert next(it)["views"].shape[0] == 1  # Host batch = global batch / hosts.
  assert not seen[0] & seen[1]


def test_eval_batches_are_fixed_centre_crops_with_padding(tiny_config):
  config = tiny_config.copy_and_resolve_references()
  config.eval_batch_size = 3
  data_dir = input_pipeline.dataset_dir(config)
  source = records.load_split(data_dir, "validation")
  batches = list(input_pipeline.create_eval_iterator(config, data_dir, "validation", 2))
  again = list(input_pipeline.create_eval_iterator(config, data_dir, "validation", 2))
  valid = np.concatenate([b["valid"] for b in batches])
  assert valid.sum() == len(source) and all(b["views"].shape[0] == 3 for b in batches)
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a["views"], b["views"])
  first = batches[0]
  indices = input_pipeline.eval_view_indices(len(source[0]["views"]), 2, config.seed, 0)
  expected = input_pipeline.preprocess_eval_views(source[0]["views"], indices)
  np.testing.assert_array_equal(input_pipeline.to_model_input(first["views"][0, :2]), expected)
  assert first["view_mask"][0].tolist() == [True, True] + [False] * (config.max_views - 2)


def test_eval_view_draws_are_nested():
  for index in range(5):
    five = input_pipeline.eval_view_indices(24, 5, 0, index)
    assert len(set(five)) == 5
    np.testing.assert_array_equal(input_pipeline.eval_view_indices(24, 2, 0, index), five[:2])


def test_composite_background_uses_alpha():
  rgba = np.zeros((2, 2, 4), np.uint8)
  rgba[0, 0] = (10, 20, 30, 255)
  rgba[0, 1] = (100, 100, 100, 0)
  rgba[1, 0] = (0, 0, 0, 128)
  out = input_pipeline.composite_background(rgba, (240, 240, 240))
  assert out[0, 0].tolist() == [10, 20, 30]
  assert out[0, 1].tolist() == [240, 240, 240]
  assert out[1, 0].tolist() == [round(240 * 127 / 255)] * 3


def test_view_statistics_are_the_pixel_mean_and_std(tiny_config):
  data_dir = input_pipeline.dataset_dir(tiny_config)
  source = records.load_split(data_dir, "validation")
  pixels = np.concatenate([
      input_pipeline.preprocess_eval_views(source[i]["views"], np.arange(tiny_config.procedural.views))
      for i in range(len(source))]).reshape(-1, 3).astype(np.float64)
  mean, std = input_pipeline.view_statistics(data_dir, "validation")
  np.testing.assert_allclose(mean, pixels.mean(0), rtol=1e-6)
  np.testing.assert_allclose(std, pixels.std(0), rtol=1e-5)
  with pytest.raises(ValueError, match="nosuch"):
    input_pipeline.view_statistics(data_dir, "nosuch")


def _plain_train_batches(config, data_dir, num_batches, start_step=0):
  """The plain form of the training pipeline: TrainExample per decoded record, host composite,
  batched by grain (what create_train_iterator ran before its fast form)."""
  source = records.load_split(data_dir, config.train_split)
  ds = grain.MapDataset.source(source).shuffle(seed=config.seed).repeat()
  ds = ds.map_with_index(input_pipeline.TrainExample(config, config.batch_size))
  ds = ds.batch(config.batch_size, drop_remainder=True)[start_step:]
  return [ds[i] for i in range(num_batches)]


def _host_rgb(batch):
  """A fast-form batch composited on the host with the float reference."""
  return input_pipeline.composite_background(batch["views"], batch["background"])


@pytest.mark.parametrize("per_example_views,random_flip,buckets", [
    (False, False, ()), (True, True, ()), (False, True, (1, 2))])
def test_fast_train_batches_equal_the_plain_form(tiny_config, per_example_views, random_flip,
                                                 buckets):
  """Same views (after the device composite), masks and voxels as TrainExample, batch for batch."""
  config = tiny_config.copy_and_resolve_references()
  config.per_example_views, config.random_flip, config.view_buckets = (
      per_example_views, random_flip, buckets)
  config.batch_size = 3
  data_dir = input_pipeline.dataset_dir(config)
  fast = _take(input_pipeline.create_train_iterator(config, data_dir, start_step=2), 6)
  plain = _plain_train_batches(config, data_dir, 6, start_step=2)
  composite = jax.jit(input_pipeline.model_input)
  for f, p in zip(fast, plain):
    v = f["views"].shape[1]
    assert v <= config.max_views and f["background"].shape == (3, v, 3)
    np.testing.assert_array_equal(f["view_mask"], p["view_mask"][:, :v])
    assert not p["view_mask"][:, v:].any()  # Only padding is cut.
    np.testing.assert_array_equal(f["voxels"], p["voxels"])
    # The jitted step's input is bit-identical to the one it computed from host-composited RGB.
    expected = composite({"views": p["views"][:, :v]})
    np.testing.assert_array_equal(np.asarray(composite(f)), np.asarray(expected))
    np.testing.assert_array_equal(_host_rgb(f), p["views"][:, :v])


def test_device_composite_equals_host_composite_for_every_pixel_value():
  """composite_integer (jitted) == composite_background (float32, rint) for all (c, alpha, bg)."""
  values = np.arange(256, dtype=np.uint8)
  rgba = np.zeros((256, 256, 4), np.uint8)  # H = alpha, W = colour.
  rgba[..., :3] = values[None, :, None]
  rgba[..., 3] = values[:, None]
  composite = jax.jit(input_pipeline.composite_integer)
  for start in range(0, 256, 64):  # 64 background grey levels per call.
    bg = np.repeat(values[start:start + 64, None], 3, axis=1)
    stacked = np.broadcast_to(rgba, (64,) + rgba.shape)
    np.testing.assert_array_equal(np.asarray(composite(stacked, bg)),
                                  input_pipeline.composite_background(stacked, bg))


def test_view_buckets_bound_the_padded_shapes(tiny_config):
  config = tiny_config.copy_and_resolve_references()
  config.max_views, config.view_buckets = 6, (1, 2, 4, 9)
  assert [input_pipeline.padded_view_count(config, n) for n in range(1, 7)] == [1, 2, 4, 4, 6, 6]
  config.per_example_views = True  # Per-example counts differ between hosts: no buckets.
  assert input_pipeline.padded_view_count(config, 1) == 6
  config.per_example_views, config.max_views, config.view_buckets = False, 3, (1,)
  data_dir = input_pipeline.dataset_dir(config)
  traces = []
  step = jax.jit(lambda b: (traces.append(b["views"].shape), input_pipeline.model_input(b).sum())[1])
  shapes = set()
  for batch in _take(input_pipeline.create_train_iterator(config, data_dir), 12):
    n = int(batch["view_mask"].sum(axis=1)[0])
    assert batch["views"].shape[1] == (1 if n == 1 else 3)
    shapes.add(batch["views"].shape[1])
    step(batch)
  assert shapes == {1, 3} and len(traces) == 2  # One compile per bucket.


def test_encoded_views_decode_like_tfds(tiny_config):
  data_dir = input_pipeline.dataset_dir(tiny_config)
  decoded = records.load_split(data_dir, "train")
  encoded = input_pipeline.load_encoded_split(data_dir, "train")
  for i in range(len(decoded)):
    features = input_pipeline.encoded_features(encoded[i])
    np.testing.assert_array_equal(input_pipeline.decode_views(features["views"]),
                                  decoded[i]["views"])
    np.testing.assert_array_equal(input_pipeline.decode_voxels(features["voxels"]),
                                  decoded[i]["voxels"])
  with pytest.raises(ValueError, match=r"record has no \['nosuch'\] feature"):
    input_pipeline.encoded_features(encoded[0], ("views", "nosuch"))
  with pytest.raises(ValueError, match="views feature: 7 bytes"):
    input_pipeline.decode_views(zlib.compress(b"1234567"))


def test_data_workers_auto_is_zero_on_cpu(tiny_config):
  config = tiny_config.copy_and_resolve_references()
  config.data_workers = -1
  assert jax.default_backend() == "cpu" and input_pipeline.num_data_workers(config) == 0
  config.data_workers = 3
  assert input_pipeline.num_data_workers(config) == 3
