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

try:  # Same bytes as zlib, inflated 4-7x faster (benchmarks/RESULTS.md, "Input pipeline").
  from zlib_ng import zlib_ng as _zlib
except ImportError:  # pragma: no cover - zlib-ng is in install_requires; zlib is the slow twin.
  import zlib as _zlib

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

  def __init__(self, config, host_batch_size):
    self.config, self.example = config, TrainExample(config, host_batch_size)

  def __call__(self, batch_index, encoded):
    """Batch `batch_index` from its `encoded` (serialized) records."""
    b = len(encoded)
    per_batch = not self.config.per_example_views
    padded = padded_view_count(self.config, self.example.num_views(batch_index * b, None)
                               if per_batch else 0)
    views = np.zeros((b, padded, CROP, CROP, 4), np.uint8)
    background = np.zeros((b, padded, 3), np.uint8)
    mask = np.zeros((b, padded), bool)
    voxels = np.empty((b,) + (records.VOXEL_RESOLUTION,) * 3, bool)
    for j, serialized in enumerate(encoded):
      record = encoded_features(serialized)
      index = batch_index * b + j
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
  """Iterator over this host's training batches from `start_step` on (host batch = global / hosts)."""
  if config.batch_size % process_count:
    raise ValueError(f"batch_size {config.batch_size} is not divisible by {process_count} hosts")
  host_batch = config.batch_size // process_count
  source = load_encoded_split(data_dir, config.train_split)
  ds = grain.MapDataset.source(source)[process_index::process_count]
  ds = ds.shuffle(seed=config.seed).repeat()
  ds = ds.batch(host_batch, drop_remainder=True, batch_fn=list)
  ds = ds.map_with_index(TrainBatch(config, host_batch))
  return iter(_to_iter(config, ds[start_step:], num_data_workers(config)))


def create_eval_iterator(config, data_dir, split, num_views, num_batches=-1, process_index=0,
                         process_count=1):
  """Host batches of a split with fixed views; the last batch is padded with `valid` False."""
  host_batch = config.eval_batch_size // process_count
  source = records.load_split(data_dir, split)
  ds = grain.MapDataset.source(source)
  ds = ds.map_with_index(EvalExample(config.seed, num_views, max(num_views, config.max_views)))
  ds = ds[process_index::process_count].batch(host_batch)
  if num_batches > 0:
    ds = ds[:num_batches]
  for batch in _to_iter(config, ds):
    yield pad_batch(batch, host_batch)


def pad_batch(batch, size):
  """Pads every array of a batch along axis 0 to `size` (zeros; `valid` False marks the padding)."""
  n = len(batch["valid"])
  if n == size:
    return batch
  return {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
