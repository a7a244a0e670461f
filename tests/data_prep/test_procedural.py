"""The embedded procedural furniture dataset."""

import collections
import os
import time

import numpy as np
import pytest

from data_prep import pipeline, procedural, records

pytestmark = pytest.mark.slow  # Renders with EGL (pyrender): not in the fast tier.

NUM_OBJECTS, VIEWS = 10, 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("procedural")
  return data_dir, procedural.ensure_procedural_dataset(data_dir, NUM_OBJECTS, VIEWS, seed=0,
                                                       workers=2)


def test_every_category_generates_varied_normalised_meshes():
  assert len(procedural.CATEGORIES) >= 8
  for category in procedural.CATEGORIES:
    a = procedural.generate(category, np.random.default_rng(1))
    b = procedural.generate(category, np.random.default_rng(2))
    for m in (a, b):
      np.testing.assert_allclose(m.extents.max(), 1.0, rtol=1e-6)
      np.testing.assert_allclose(m.bounds.sum(0), 0.0, atol=1e-6)  # Bounding box centred.
      assert len(np.unique(m.visual.face_colors, axis=0)) >= 2, category  # Colour per part.
    assert a.extents.tolist() != b.extents.tolist() or len(a.faces) != len(b.faces), category
  # The same seed gives the same object.
  np.testing.assert_array_equal(procedural.generate("chair", np.random.default_rng(5)).vertices,
                                procedural.generate("chair", np.random.default_rng(5)).vertices)


def test_splits_are_stratified_and_deterministic():
  ids = [f"o{i}" for i in range(40)]
  cats = [procedural.category_of(i) for i in range(40)]
  splits = pipeline.assign_splits(ids, cats, seed=0)
  assert splits == pipeline.assign_splits(ids, cats, seed=0)
  assert splits != pipeline.assign_splits(ids, cats, seed=1)
  counts = collections.Counter(splits)
  assert counts == {"train": 32, "validation": 4, "test": 4}
  # Every category keeps most of its objects in train.
  for c in set(cats):
    assert sum(s == "train" for s, cc in zip(splits, cats) if cc == c) >= 2


def test_dataset_is_readable_in_every_split(dataset):
  _, dataset_dir = dataset
  assert dataset_dir.endswith(os.path.join("procedural_furniture", "n10_v3_s0", "1.0.0"))
  categories, ids = set(), set()
  total = 0
  for split in records.SPLITS:
    source = records.load_split(dataset_dir, split)
    assert len(source) >= 1, split
    total += len(source)
    for ex in source:
      assert ex["views"].shape == (VIEWS, 137, 137, 4) and ex["views"].dtype == np.uint8
      assert ex["voxels"].shape == (32, 32, 32) and ex["voxels"].dtype == np.bool_
      assert ex["K"].shape == (VIEWS, 3, 3) and ex["pose"].shape == (VIEWS, 4, 4)
      for key in ("azimuth", "elevation", "distance", "fov"):
        assert ex[key].shape == (VIEWS,) and ex[key].dtype == np.float32
      assert 50 < ex["voxels"].sum() < 32**3 // 2
      assert (ex["views"][..., 3] > 0).mean() > 0.05  # The object is visible in every record.
      assert records.decode_text(ex["voxel_method"]) in ("parity", "surface_fill_holes")
      categories.add(records.decode_text(ex["category"]))
      ids.add(records.decode_text(ex["object_id"]))
  assert total == NUM_OBJECTS and len(ids) == NUM_OBJECTS
  assert len(categories) >= 8
  report = open(os.path.join(dataset_dir, pipeline.REPORT_NAME)).read()
  assert "Skipped inputs: 0" in report and "chair" in report


def test_second_call_reuses_the_dataset(dataset):
  data_dir, dataset_dir = dataset
  info = os.path.join(dataset_dir, "dataset_info.json")
  mtime = os.path.getmtime(info)
  start = time.time()
  again = procedural.ensure_procedural_dataset(data_dir, NUM_OBJECTS, VIEWS, seed=0)
  assert again == dataset_dir
  assert time.time() - start < 1.0
  assert os.path.getmtime(info) == mtime
