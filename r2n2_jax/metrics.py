"""Reconstruction metrics on occupancy grids; work on numpy and jax arrays alike."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.spatial
import skimage.measure
import trimesh

IOU_THRESHOLD = 0.4  # The R2N2 protocol's threshold of P(occupied) for IoU, F-score and pictures.


def voxel_cross_entropy(logits, voxels):
  """Mean voxel-wise softmax cross-entropy per example: (B, 32, 32, 32, 2), (B, 32, 32, 32) -> (B,)."""
  # One-hot labels: the same values and gradients as the integer-label form, whose gather's
  # gradient is a scatter XLA spends seconds constant-folding at compile time (B36 train step:
  # compile 9.7 -> 5.9 s).
  one_hot = jax.nn.one_hot(jnp.asarray(voxels, jnp.int32), logits.shape[-1])
  ce = optax.softmax_cross_entropy(logits.astype(jnp.float32), one_hot)
  return ce.reshape(ce.shape[0], -1).mean(axis=1)


def occupancy_probability(logits):
  """P(occupied) = softmax(logits)[..., 1]: (..., 2) -> (...)."""
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., 1]


def iou_per_object(probs, voxels, threshold=IOU_THRESHOLD):
  """|pred AND gt| / |pred OR gt| per object with pred = probs >= threshold: (N, ...) -> (N,).

  An object whose prediction and ground truth are both empty has IoU 1.
  """
  pred = jnp.asarray(probs) >= threshold
  gt = jnp.asarray(voxels, bool)
  axes = tuple(range(1, pred.ndim))
  inter = jnp.sum(pred & gt, axis=axes)
  union = jnp.sum(pred | gt, axis=axes)
  return jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0)


# --- Evaluation metrics on numpy arrays (DESIGN.md section 6) ---

IOU_THRESHOLDS = (0.2, 0.3, IOU_THRESHOLD, 0.5)  # Pix2Vox reports the best of these.
FSCORE_TOLERANCE = 0.01  # F-score@1%: distance threshold as a fraction of the grid side.
FSCORE_POINTS = 8192  # Points sampled on each surface for the F-score.
_LOG_EPS = 1e-7


def log_loss_per_object(probs, voxels):
  """Mean voxel binary cross-entropy of P(occupied) per object: (N, ...), (N, ...) -> (N,).

  Probabilities are clipped to [1e-7, 1 - 1e-7]; on softmax outputs this is the training loss.
  """
  p = np.clip(np.asarray(probs, np.float64), _LOG_EPS, 1.0 - _LOG_EPS)
  y = np.asarray(voxels, bool)
  ce = -np.where(y, np.log(p), np.log1p(-p))
  return ce.reshape(ce.shape[0], -1).mean(axis=1)


def surface_mesh(occupancy, level=0.5):
  """Marching-cubes surface of a (R, R, R) grid in the unit cube [-0.5, 0.5]^3; None if empty.

  The grid is padded with zeros so surfaces touching the border are closed. Vertices are in the
  normalised object frame: cell (i, j, k) is centred at -0.5 + (ijk + 0.5) / R (DESIGN.md 4).
  """
  grid = np.pad(np.asarray(occupancy, np.float32), 1)
  if not (grid.max() > level > grid.min()):
    return None
  verts, faces, _, _ = skimage.measure.marching_cubes(grid, level=level)
  resolution = np.asarray(occupancy).shape[0]
  verts = -0.5 + (verts - 1.0 + 0.5) / resolution
  return trimesh.Trimesh(vertices=verts, faces=faces, process=False)


def fscore_from_points(pred_points, gt_points, tolerance=FSCORE_TOLERANCE):
  """F-score of two point sets (P, 3), (G, 3) at a distance tolerance -> (fscore, precision, recall).

  precision = fraction of predicted points within `tolerance` of a ground-truth point, recall the
  converse; F = 2PR / (P + R), 0 when both are 0. Two empty sets score 1, one empty set 0.
  """
  pred_points = np.asarray(pred_points, np.float64).reshape(-1, 3)
  gt_points = np.asarray(gt_points, np.float64).reshape(-1, 3)
  if len(pred_points) == 0 or len(gt_points) == 0:
    score = float(len(pred_points) == len(gt_points))
    return score, score, score
  d_pred, _ = scipy.spatial.cKDTree(gt_points).query(pred_points)
  d_gt, _ = scipy.spatial.cKDTree(pred_points).query(gt_points)
  precision = float(np.mean(d_pred <= tolerance))
  recall = float(np.mean(d_gt <= tolerance))
  total = precision + recall
  return (2.0 * precision * recall / total if total > 0 else 0.0), precision, recall


def fscore_per_object(probs, voxels, threshold=IOU_THRESHOLD, tolerance=FSCORE_TOLERANCE,
                      num_points=FSCORE_POINTS, seed=0):
  """F-score@tolerance per object (Tatarchenko et al. 2019): (N, R, R, R) x2 -> (N,).

  The prediction is binarised at `threshold` (as for IoU); both grids are turned into surfaces by
  marching cubes at 0.5 in the unit cube, `num_points` points are sampled on each (seeded, so the
  result is reproducible), and precision/recall count points within `tolerance` (a fraction of
  the unit grid side) of the other set.
  """
  probs = np.asarray(probs)
  voxels = np.asarray(voxels, bool)
  scores = np.empty(len(probs), np.float64)
  for n in range(len(probs)):
    points = []
    for grid in (probs[n] >= threshold, voxels[n]):
      mesh = surface_mesh(grid)
      points.append(np.zeros((0, 3)) if mesh is None else
                    trimesh.sample.sample_surface(mesh, num_points, seed=seed)[0])
    scores[n] = fscore_from_points(points[0], points[1], tolerance)[0]
  return scores


def _mean_by(values, keys):
  """{str(key): mean of values where keys == key} over the sorted distinct keys."""
  return {str(k): float(np.mean(values[keys == k])) for k in sorted(set(keys.tolist()))}


def summarize(rows, headline_views):
  """Aggregates per-(object, view count) rows into the metrics.json figures.

  rows: dict of (N,) arrays `n_views`, `category`, `log_loss`, `fscore` and `iou@T` for T in
  IOU_THRESHOLDS. Headline figures (`iou`, `iou_by_class`, `log_loss`, `fscore`) use the rows with
  `headline_views` views; `*_by_views` use IoU@0.4 (the R2N2 protocol) and every view count.
  """
  n_views = np.asarray(rows["n_views"])
  category = np.asarray(rows["category"])
  head = n_views == headline_views
  iou = {f"{t}": np.asarray(rows[f"iou@{t}"], np.float64) for t in IOU_THRESHOLDS}
  log_loss = np.asarray(rows["log_loss"], np.float64)
  fscore = np.asarray(rows["fscore"], np.float64)
  return {
      "views": int(headline_views),
      "num_objects": int(head.sum()),
      "iou": {t: float(np.mean(v[head])) for t, v in iou.items()},
      "iou_by_views": _mean_by(iou[str(IOU_THRESHOLD)], n_views),
      "iou_by_views_and_threshold": {t: _mean_by(v, n_views) for t, v in iou.items()},
      "iou_by_class": _mean_by(iou[str(IOU_THRESHOLD)][head], category[head]),
      "objects_by_class": {str(c): int(np.sum(category[head] == c))
                           for c in sorted(set(category[head].tolist()))},
      "log_loss": float(np.mean(log_loss[head])),
      "log_loss_by_views": _mean_by(log_loss, n_views),
      "fscore": float(np.mean(fscore[head])),
      "fscore_by_views": _mean_by(fscore, n_views),
  }


def row_metrics(probs, voxels, threshold=IOU_THRESHOLD):
  """Per-object metrics of a batch: (N, R, R, R) probabilities and voxels -> dict of (N,) arrays."""
  out = {f"iou@{t}": np.asarray(iou_per_object(probs, voxels, t), np.float64)
         for t in IOU_THRESHOLDS}
  out["log_loss"] = log_loss_per_object(probs, voxels)
  out["fscore"] = fscore_per_object(probs, voxels, threshold)
  return out
