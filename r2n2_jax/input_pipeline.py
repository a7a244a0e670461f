"""TFDS array_record records -> grain -> (views, view_mask, voxels) batches.

Batches are numpy dicts:
  views      (B, max_views, 127, 127, 3) uint8 RGB (the step scales them to [0, 1])
  view_mask  (B, max_views) bool, True for real views (padding at the end)
  voxels     (B, 32, 32, 32) bool
Training batches are a pure function of (seed, step): resuming at step s reads exactly the batches
an uninterrupted run would have read, so the data position needs no state of its own.
"""

import os

import grain
import numpy as np

from data_prep import records

CROP = records.CROP_SIZE
EVAL_BACKGROUND = 240  # Grey background of evaluation/test views (DESIGN.md section 3).
TRAIN_BACKGROUND_RANGE = (225, 256)  # Random light background per image and channel, [225, 255].


def dataset_dir(config):
  """The TFDS dataset directory of `config.dataset`; the procedural one is built on first use."""
  data_dir = os.path.expanduser(config.data_dir)
  if config.dataset == "procedural":
    from data_prep.procedural import ensure_procedural_dataset  # Rendering deps load lazily.
    p = config.procedural
    return ensure_procedural_dataset(data_dir, p.num_objects, p.views, p.seed)
  path = os.path.expanduser(config.dataset)
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(data_dir, path)
  if not os.path.exists(os.path.join(path, "dataset_info.json")):
    raise FileNotFoundError(
        f"{path}: not a TFDS dataset directory (no dataset_info.json); set --config.dataset to "
        "'procedural' or to a directory written by `python -m data_prep`")
  return path


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


def center_crop(images, size=CROP):
  """Centre crop of (..., H, W, C) to (..., size, size, C)."""
  h, w = images.shape[-3:-1]
  top, left = (h - size) // 2, (w - size) // 2
  return images[..., top:top + size, left:left + size, :]


def eval_view_indices(num_available, num_views, seed, index):
  """The fixed seeded draw of test views of object `index`: the first n of a per-object permutation.

  Draws are nested (the 2-view set contains the 1-view set), so view-count curves are comparable.
  """
  perm = np.random.default_rng([seed, index]).permutation(num_available)
  return perm[:min(num_views, num_available)]


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
    total, total_sq, count = total + pixels.sum(0), total_sq + (pixels ** 2).sum(0), count + len(pixels)
  mean = total / count
  return mean, np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))


def _padded(views, max_views):
  """Pads (n, 127, 127, 3) uint8 views to max_views and returns (views, mask)."""
  n = views.shape[0]
  out = np.zeros((max_views,) + views.shape[1:], np.uint8)
  out[:n] = views
  return out, np.arange(max_views) < n


class TrainExample:
  """Record -> training example: n distinct random views, random 127 crops and light backgrounds.

  n is drawn per batch (from the batch number) or per example, so every host draws the same n.
  """

  def __init__(self, config, host_batch_size):
    self.seed = config.seed
    self.max_views = config.max_views
    self.per_example_views = config.per_example_views
    self.random_flip = config.random_flip
    self.host_batch_size = host_batch_size

  def num_views(self, index, rng):
    if self.per_example_views:
      return int(rng.integers(1, self.max_views + 1))
    batch_rng = np.random.default_rng([self.seed, 1, index // self.host_batch_size])
    return int(batch_rng.integers(1, self.max_views + 1))

  def __call__(self, index, record):
    rng = np.random.default_rng([self.seed, 0, index])
    all_views = record["views"]
    n = min(self.num_views(index, rng), all_views.shape[0])
    chosen = rng.choice(all_views.shape[0], n, replace=False)
    size = all_views.shape[1]
    crops = []
    for v in chosen:
      top, left = rng.integers(0, size - CROP + 1, size=2)
      crops.append(all_views[v, top:top + CROP, left:left + CROP])
    crops = np.stack(crops)
    background = rng.integers(*TRAIN_BACKGROUND_RANGE, size=(n, 3))
    rgb = composite_background(crops, background)
    if self.random_flip:
      flip = rng.random(n) < 0.5
      rgb[flip] = rgb[flip, :, ::-1]
    views, mask = _padded(rgb, self.max_views)
    return {"views": views, "view_mask": mask, "voxels": np.asarray(record["voxels"], bool)}


class EvalExample:
  """Record -> evaluation example: the fixed seeded draw of `num_views` views, centre crop, grey 240."""

  def __init__(self, seed, num_views, max_views):
    self.seed, self.num_views, self.max_views = seed, num_views, max_views

  def __call__(self, index, record):
    all_views = record["views"]
    indices = eval_view_indices(all_views.shape[0], self.num_views, self.seed, index)
    rgb = composite_background(center_crop(all_views[indices]), (EVAL_BACKGROUND,) * 3)
    views, mask = _padded(rgb, self.max_views)
    return {
        "views": views, "view_mask": mask, "voxels": np.asarray(record["voxels"], bool),
        "valid": np.bool_(True), "index": np.int64(index),
    }


def _read_options(config):
  return grain.ReadOptions(num_threads=max(1, config.prefetch_batches), prefetch_buffer_size=
                           max(1, config.prefetch_batches))


def _to_iter(config, ds):
  it = ds.to_iter_dataset(_read_options(config))
  if config.data_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data_workers))
  return it


def create_train_iterator(config, data_dir, start_step=0, process_index=0, process_count=1):
  """Iterator over this host's training batches from `start_step` on (host batch = global / hosts).

  The global order (shuffle, then batches of config.batch_size) depends on the seed only, and host
  p reads the p-th of `process_count` slices of every global batch: the data a step reads does not
  depend on the number of hosts, so a run resumed on other hosts reads what it would have read.
  """
  if config.batch_size % process_count:
    raise ValueError(f"batch_size {config.batch_size} is not divisible by {process_count} hosts")
  host_batch = config.batch_size // process_count
  source = records.load_split(data_dir, config.train_split)
  ds = grain.MapDataset.source(source).shuffle(seed=config.seed).repeat()
  # Example indices are global positions and n is drawn per global batch: equal on every host.
  ds = ds.map_with_index(TrainExample(config, config.batch_size))
  # Global batch b is slices bP..bP+P-1 (drop_remainder: an infinite length stays an int).
  ds = ds.batch(host_batch, drop_remainder=True)[process_index::process_count]
  return iter(_to_iter(config, ds[start_step:]))


def create_eval_iterator(config, data_dir, split, num_views, num_batches=-1, process_index=0,
                         process_count=1):
  """This host's batches of a split with fixed views, `num_batches` global batches (-1: all).

  Host p holds the p-th slice of every global batch of config.eval_batch_size, and every host
  yields the same number of batches (collectives stay in step): slots past the end of the split
  are padding with `valid` False.
  """
  if config.eval_batch_size % process_count:
    raise ValueError(f"eval_batch_size {config.eval_batch_size} is not divisible by "
                     f"{process_count} hosts")
  host_batch = config.eval_batch_size // process_count
  source = records.load_split(data_dir, split)
  total = len(source) if num_batches <= 0 else min(len(source), num_batches * config.eval_batch_size)
  num_global = -(-total // config.eval_batch_size)
  ds = grain.MapDataset.source(source)
  ds = ds.map_with_index(EvalExample(config.seed, num_views, max(num_views, config.max_views)))
  ds = ds[:total]
  yielded = 0
  for batch in _to_iter(config, ds.batch(host_batch)[process_index::process_count]):
    yield pad_batch(batch, host_batch)
    yielded += 1
  for _ in range(num_global - yielded):  # This host's slices all lie past the end of the split.
    yield pad_batch({k: np.asarray(v)[None][:0] for k, v in ds[0].items()}, host_batch)


def pad_batch(batch, size):
  """Pads every array of a batch along axis 0 to `size` (zeros; `valid` False marks the padding)."""
  n = len(batch["valid"])
  if n == size:
    return batch
  return {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
