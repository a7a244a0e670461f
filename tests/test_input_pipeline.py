"""Input pipeline: view draws, masks, crops, backgrounds, determinism by step, host shards."""

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
    assert batch["views"].shape == (config.batch_size, config.max_views, 127, 127, 3)
    assert batch["views"].dtype == np.uint8 and batch["voxels"].shape == (config.batch_size,) + (32,) * 3
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
    for view in batch["views"][0][batch["view_mask"][0]]:
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
