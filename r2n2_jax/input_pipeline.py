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
# Evaluation framing and input statistics live in data_prep (one implementation, also used by
# `python -m data_prep`); re-exported here for the trainer, evaluation, predict and tests.
from data_prep.framing import (  # noqa: F401  pylint: disable=unused-import
    EVAL_BACKGROUND, center_crop, composite_background, preprocess_eval_views, to_model_input,
    view_statistics)

CROP = records.CROP_SIZE
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


def eval_view_indices(num_available, num_views, seed, index):
  """The fixed seeded draw of test views of object `index`: the first n of a per-object permutation.

  Draws are nested (the 2-view set contains the 1-view set), so view-count curves are comparable.
  """
  perm = np.random.default_rng([seed, index]).permutation(num_available)
  return perm[:min(num_views, num_available)]


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
