"""How a record's views are framed as network input at evaluation, and their statistics.

Evaluation (and `predict`) show the network the centre 127x127 crop of a 137x137 render
composited over a grey-240 background, as floats in [0, 1] (DESIGN.md section 3).
`view_statistics` measures a dataset's per-channel mean/std under that framing: the values of
config.model.input_mean / input_std for it (`python -m data_prep` prints them).
"""

import numpy as np

from data_prep import records

EVAL_BACKGROUND = 240  # Grey background of evaluation/test views.


def composite_background(rgba, rgb):
  """Alpha-composites RGBA uint8 (..., H, W, 4) over a background colour (..., 3) -> uint8 RGB."""
  rgba = np.asarray(rgba)
  alpha = rgba[..., 3:4].astype(np.float32) / 255.0
  background = np.asarray(rgb, np.float32)[..., None, None, :]
  out = rgba[..., :3].astype(np.float32) * alpha + background * (1.0 - alpha)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_model_input(rgb):
  """uint8 RGB -> float32 in [0, 1], the model's input scale (numpy or jax arrays)."""
  return rgb.astype(np.float32) / np.float32(255.0)


def center_crop(images, size=records.CROP_SIZE):
  """Centre crop of (..., H, W, C) to (..., size, size, C)."""
  h, w = images.shape[-3:-1]
  top, left = (h - size) // 2, (w - size) // 2
  return images[..., top:top + size, left:left + size, :]


def preprocess_eval_views(views_rgba, indices):
  """(V, 137, 137, 4) uint8 RGBA -> (n, 127, 127, 3) float32: centre crop on the grey background."""
  rgb = composite_background(center_crop(views_rgba[np.asarray(indices)]), (EVAL_BACKGROUND,) * 3)
  return to_model_input(rgb)


def view_statistics(data_dir, split="train", max_objects=200):
  """Per-channel mean and std in [0, 1] of a split's views as evaluation frames them (centre
  crop, grey background), over up to `max_objects` evenly spaced objects: the values to use as
  config.model.input_mean / input_std for that data. Returns two (3,) float64 arrays."""
  source = records.load_split(data_dir, split)
  if len(source) == 0:
    raise ValueError(f"Split {split!r} of {data_dir} has no examples")
  total, total_sq, count = np.zeros(3), np.zeros(3), 0
  for i in np.unique(np.linspace(0, len(source) - 1, min(len(source), max_objects)).astype(int)):
    views = source[int(i)]["views"]
    pixels = preprocess_eval_views(views, np.arange(len(views))).reshape(-1, 3).astype(np.float64)
    total, total_sq, count = (total + pixels.sum(0), total_sq + (pixels ** 2).sum(0),
                              count + len(pixels))
  mean = total / count
  return mean, np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
