"""TFDS array_record records -> grain -> (views, view_mask, voxels) batches.

Batches are numpy dicts; `model_input(batch)` is what the model sees (float32 RGB in [0, 1]):
  views       training: (B, V, 127, 127, 4) uint8 RGBA crops, composited over `background` inside
              the jitted step; evaluation: (B, V, 127, 127, 3) uint8 RGB on the grey background
  background  training only: (B, V, 3) uint8 background colour of each view
  view_mask   (B, V) bool, True for real views (padding at the end)
  voxels      (B, 32, 32, 32) bool
V is max_views, or for training the smallest of config.view_buckets that holds the batch's views.
Training batches are a pure function of (seed, step): resuming at step s reads exactly the batches
an uninterrupted run would have read, so the data position needs no state of its own.
"""

import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from data_prep import records
# Evaluation framing and input statistics live in data_prep (one implementation, also used by
# `python -m data_prep`); re-exported here for the trainer, evaluation, predict and tests.
from data_prep.framing import (  # noqa: F401  pylint: disable=unused-import
    EVAL_BACKGROUND, center_crop, composite_background, preprocess_eval_views, to_model_input,
    view_statistics)

try:  # Same bytes as zlib, inflated 4-7x faster (benchmarks/RESULTS.md, "Input pipeline").
  from zlib_ng import zlib_ng as _zlib
except ImportError:  # pragma: no cover - zlib-ng is in install_requires; zlib is the slow twin.
  import zlib as _zlib

CROP = records.CROP_SIZE
TRAIN_BACKGROUND_RANGE = (225, 256)  # Random light background per image and channel, [225, 255].


def dataset_dir(config):
  """The TFDS dataset directory of `config.dataset`; builds nothing.

  The procedural default is built by training on first use (`train.prepare_dataset`) or by
  `python -m data_prep procedural`; evaluation and the tools refuse a missing one.
  """
  data_dir = os.path.expanduser(config.data_dir)
  if config.dataset == "procedural":
    from data_prep import procedural  # pylint: disable=import-outside-toplevel  (mesh deps)
    p = config.procedural
    path = procedural.existing_procedural_dataset(data_dir, p.num_objects, p.views, p.seed)
    if path is None:
      name = procedural.config_name(p.num_objects, p.views, p.seed)
      raise FileNotFoundError(
          f"{data_dir}: the procedural dataset {name} is not built; training builds it on first "
          f"use, or run `python -m data_prep procedural --data-dir {data_dir} --num-objects "
          f"{p.num_objects} --views {p.views} --seed {p.seed}`")
    return path
  path = os.path.expanduser(config.dataset)
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(data_dir, path)
  if not os.path.exists(os.path.join(path, "dataset_info.json")):
    raise FileNotFoundError(
        f"{path}: not a TFDS dataset directory (no dataset_info.json); set --config.dataset to "
        "'procedural' or to a directory written by `python -m data_prep`")
  return path


def composite_integer(rgba, background):
  """`composite_background` in integer arithmetic (jax arrays, for the jitted step): uint8 RGB.

  round((c a + b (255 - a)) / 255) never ties (255 is odd), and the float form's error is below
  1e-4 of a level, far from the 1/510 its rounding needs: both give the same bytes for every
  (c, a, b) (tested exhaustively), so compositing on the device changes no model input.
  """
  rgba = rgba.astype(jnp.int32)
  alpha = rgba[..., 3:]
  background = jnp.asarray(background).astype(jnp.int32)[..., None, None, :]
  return ((rgba[..., :3] * alpha + background * (255 - alpha) + 127) // 255).astype(jnp.uint8)


def model_input(batch):
  """The model's float32 input of a batch: training RGBA composited over its backgrounds (on the
  device, inside the jitted step: cheap there, 0.4 ms/view of host CPU in numpy), or eval RGB."""
  if "background" in batch:
    return to_model_input(composite_integer(batch["views"], batch["background"]))
  return to_model_input(batch["views"])


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
    """n of example `index` (per-batch n ignores `rng`; per-example n draws from it)."""
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


def decode_views(blob):
  """A record's zlib-encoded `views` feature (tfds decoding skipped) -> (V, 137, 137, 4) uint8."""
  size = records.IMAGE_SIZE
  flat = np.frombuffer(_zlib.decompress(blob), np.uint8)
  if flat.size % (size * size * 4):
    raise ValueError(f"views feature: {flat.size} bytes is not a whole number of {size}x{size} "
                     "RGBA views")
  return flat.reshape(-1, size, size, 4)


def decode_voxels(blob):
  """The zlib-encoded `voxels` feature of a record -> (32, 32, 32) bool."""
  return np.frombuffer(_zlib.decompress(blob), np.bool_).reshape((records.VOXEL_RESOLUTION,) * 3)


def load_encoded_split(data_dir, split):
  """A split whose records read as serialized bytes: `encoded_features` takes what training uses
  from them (tfds' numpy decoding of all 12 features cost 0.36 ms/record, the proto 0.01 ms)."""
  return records.load_split(data_dir, split,
                            deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)


def encoded_features(serialized, names=("views", "voxels")):
  """{name: the zlib bytes of that tensor feature} of one serialized record (tf.train.Example)."""
  features = tf_example_pb2.Example.FromString(serialized).features.feature
  missing = [n for n in names if n not in features]
  if missing:
    raise ValueError(f"record has no {missing} feature: not a dataset written by data_prep")
  return {n: features[n].bytes_list.value[0] for n in names}


def padded_view_count(config, num_views):
  """Views a training batch with `num_views` views per example is padded to: the smallest of
  config.view_buckets that holds them (one compiled step per bucket), else max_views. Per-example
  view counts differ between hosts, so they always pad to max_views."""
  if config.per_example_views:
    return config.max_views
  return min([b for b in config.view_buckets if num_views <= b < config.max_views],
             default=config.max_views)


class TrainBatch:
  """Fast form of TrainExample + batching, over a batch of still-encoded records (tested equal).

  Same draws as TrainExample, but: only the views and voxels are parsed and inflated (zlib-ng),
  the crops are copied straight into one preallocated uint8 RGBA batch padded to
  `padded_view_count`, and the background composite is left to the jitted step (`model_input`).
  At B64 / max_views 20 the plain form spent ~60% of its CPU compositing in float32 and ~30% in
  zlib (cProfile).
  """

  def __init__(self, config, process_index=0, process_count=1):
    self.config, self.example = config, TrainExample(config, config.batch_size)
    self.global_batch, self.offset = config.batch_size, process_index * (
        config.batch_size // process_count)

  def __call__(self, batch_index, encoded):
    """This host's slice of global batch `batch_index` from its `encoded` (serialized) records."""
    b = len(encoded)
    first = batch_index * self.global_batch + self.offset  # Global position of example 0.
    per_batch = not self.config.per_example_views
    padded = padded_view_count(self.config, self.example.num_views(first, None)
                               if per_batch else 0)
    views = np.zeros((b, padded, CROP, CROP, 4), np.uint8)
    background = np.zeros((b, padded, 3), np.uint8)
    mask = np.zeros((b, padded), bool)
    voxels = np.empty((b,) + (records.VOXEL_RESOLUTION,) * 3, bool)
    for j, serialized in enumerate(encoded):
      record = encoded_features(serialized)
      index = first + j
      rng = np.random.default_rng([self.example.seed, 0, index])
      all_views = decode_views(record["views"])
      n = min(self.example.num_views(index, rng), all_views.shape[0])
      chosen = rng.choice(all_views.shape[0], n, replace=False)
      size = all_views.shape[1]
      offsets = rng.integers(0, size - CROP + 1, size=(n, 2))  # Same stream as n draws of 2.
      background[j, :n] = rng.integers(*TRAIN_BACKGROUND_RANGE, size=(n, 3))
      flip = rng.random(n) < 0.5 if self.example.random_flip else np.zeros(n, bool)
      for k, (v, (top, left)) in enumerate(zip(chosen, offsets)):
        crop = all_views[v, top:top + CROP, left:left + CROP]
        views[j, k] = crop[:, ::-1] if flip[k] else crop
      mask[j, :n] = True
      voxels[j] = decode_voxels(record["voxels"])
    return {"views": views, "background": background, "view_mask": mask, "voxels": voxels}


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


def num_data_workers(config):
  """config.data_workers, or for -1 (auto): none on the CPU backend (the step is the bottleneck
  and shares the cores), else one per core this process may use but one, at most 32."""
  if config.data_workers >= 0:
    return config.data_workers
  if jax.default_backend() == "cpu":
    return 0
  return max(1, min(len(os.sched_getaffinity(0)) - 1, 32))


def _to_iter(config, ds, workers=None):
  """Iterator of `ds`; evaluation (workers None) spawns processes only if data_workers says how
  many: its 20-odd batches per evaluation would not pay for starting cores - 1 of them."""
  it = ds.to_iter_dataset(_read_options(config))
  workers = max(config.data_workers, 0) if workers is None else workers
  if workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
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
  source = load_encoded_split(data_dir, config.train_split)
  ds = grain.MapDataset.source(source).shuffle(seed=config.seed).repeat()
  # Global batch b is host batches bP..bP+P-1 of one global order (drop_remainder: an infinite
  # length stays an int), so the data do not depend on the process count; TrainBatch numbers the
  # examples by their global position and draws n per global batch: equal on every host.
  ds = ds.batch(host_batch, drop_remainder=True, batch_fn=list)[process_index::process_count]
  ds = ds.map_with_index(TrainBatch(config, process_index, process_count))
  return iter(_to_iter(config, ds[start_step:], num_data_workers(config)))


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
