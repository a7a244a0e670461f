"""IoU, log loss, F-score and their aggregation against hand-computed cases."""

import numpy as np
import pytest

from r2n2_jax import metrics


def _grid(*boxes):
  g = np.zeros((32, 32, 32), bool)
  for box in boxes:
    g[box] = True
  return g


def test_iou_hand_computed():
  gt = _grid(np.s_[0:4, 0:4, 0:4])  # 64 cells.
  probs = np.zeros((3, 32, 32, 32), np.float32)
  probs[0][0:4, 0:4, 0:2] = 0.9  # 32 cells, all inside: 32 / 64.
  probs[1][0:4, 0:4, 2:6] = 0.45  # 64 cells, 32 shared: 32 / 96 at 0.4, none at 0.5.
  probs[2][0:4, 0:4, 0:4] = 0.4  # Exactly at the threshold counts as occupied: 1.
  gts = np.stack([gt] * 3)
  np.testing.assert_allclose(metrics.iou_per_object(probs, gts, 0.4), [0.5, 1 / 3, 1.0])
  np.testing.assert_allclose(metrics.iou_per_object(probs, gts, 0.5), [0.5, 0.0, 0.0])
  empty = np.zeros((1, 32, 32, 32))
  assert float(metrics.iou_per_object(empty, empty.astype(bool))[0]) == 1.0


def test_log_loss_hand_computed():
  probs = np.full((1, 32, 32, 32), 0.2, np.float32)
  voxels = np.zeros((1, 32, 32, 32), bool)
  voxels[0, :16] = True  # Half the cells occupied: -(log 0.2 + log 0.8) / 2.
  np.testing.assert_allclose(metrics.log_loss_per_object(probs, voxels),
                             [-(np.log(0.2) + np.log(0.8)) / 2], rtol=1e-6)
  certain = metrics.log_loss_per_object(voxels.astype(np.float32), voxels)
  assert 0 < certain[0] < 1e-6  # Clipped, finite.


def test_log_loss_of_softmax_probs_is_the_training_loss():
  logits = np.random.default_rng(0).normal(size=(2, 32, 32, 32, 2)).astype(np.float32)
  voxels = np.random.default_rng(1).random((2, 32, 32, 32)) < 0.3
  np.testing.assert_allclose(
      metrics.log_loss_per_object(metrics.occupancy_probability(logits), voxels),
      metrics.voxel_cross_entropy(logits, voxels), rtol=1e-5)


def test_fscore_from_points_hand_computed():
  pred = [[0, 0, 0], [1, 0, 0]]
  gt = [[0, 0, 0.005], [5, 5, 5], [1.0, 0.009, 0], [9, 9, 9]]
  # Precision: both predicted points have a gt point within 0.01 -> 1. Recall: 2 of 4 -> 0.5.
  f, precision, recall = metrics.fscore_from_points(pred, gt, 0.01)
  assert (precision, recall) == (1.0, 0.5)
  assert f == pytest.approx(2 * 1.0 * 0.5 / 1.5)
  assert metrics.fscore_from_points(pred, [[3, 3, 3]], 0.01) == (0.0, 0.0, 0.0)
  assert metrics.fscore_from_points(np.zeros((0, 3)), np.zeros((0, 3)))[0] == 1.0
  assert metrics.fscore_from_points(pred, np.zeros((0, 3)))[0] == 0.0


def test_surface_mesh_lies_on_the_cell_boundaries_in_the_unit_cube():
  mesh = metrics.surface_mesh(_grid(np.s_[0:16, 0:32, 8:24]))
  assert mesh.is_watertight
  # Cells 0..15 span [-0.5, 0]; marching cubes at 0.5 cuts half way between occupied and empty
  # cell centres, i.e. on the boundaries (the outer ones via the zero padding).
  np.testing.assert_allclose(mesh.bounds, [[-0.5, -0.5, -0.25], [0.0, 0.5, 0.25]], atol=1e-6)
  assert metrics.surface_mesh(np.zeros((32, 32, 32))) is None


def test_fscore_per_object_cases():
  box = _grid(np.s_[8:24, 8:24, 8:24])
  far = _grid(np.s_[0:4, 0:4, 0:4])
  probs = np.stack([box, far, np.zeros_like(box)]).astype(np.float32)
  gts = np.stack([box, box, box])
  scores = metrics.fscore_per_object(probs, gts)
  assert scores[0] == 1.0  # Same surface and seed: the same sample points.
  assert scores[1] == 0.0  # Surfaces more than 1% of the side apart everywhere.
  assert scores[2] == 0.0  # Empty prediction.
  shifted = metrics.fscore_per_object(np.roll(box, 1, axis=0)[None].astype(np.float32), box[None])
  assert 0.2 < shifted[0] < 0.9  # A one-cell shift keeps only the side walls within 1%.
  np.testing.assert_array_equal(metrics.fscore_per_object(probs, gts), scores)  # Reproducible.


def test_summarize_groups_by_views_and_class():
  rows = {
      "n_views": np.array([1, 1, 1, 5, 5, 5]),
      "category": np.array(["a", "a", "b", "a", "a", "b"]),
      "log_loss": np.array([1.0, 2.0, 3.0, 0.5, 0.5, 0.8]),
      "fscore": np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
  }
  for t in metrics.IOU_THRESHOLDS:
    rows[f"iou@{t}"] = np.array([0.1, 0.2, 0.3, 0.5, 0.7, 0.9]) + (t - 0.4)
  out = metrics.summarize(rows, headline_views=5)
  assert out["num_objects"] == 3 and out["views"] == 5
  assert out["iou_by_views"] == pytest.approx({"1": 0.2, "5": 0.7})
  assert out["iou_by_class"] == pytest.approx({"a": 0.6, "b": 0.9})
  assert out["objects_by_class"] == {"a": 2, "b": 1}
  assert out["iou"] == pytest.approx({"0.2": 0.5, "0.3": 0.6, "0.4": 0.7, "0.5": 0.8})
  assert out["log_loss"] == pytest.approx(0.6)
  assert out["log_loss_by_views"] == pytest.approx({"1": 2.0, "5": 0.6})
  assert out["fscore"] == pytest.approx(0.5)
