"""The record schema every builder writes (DESIGN.md section 4), and the TFDS writer/reader.

One example per object:
  views      (V, 137, 137, 4) uint8 RGBA renders, alpha = object mask
  voxels     (32, 32, 32) bool, voxels[i, j, k] centred at -0.5 + (ijk + 0.5) / 32, +y up
  K          (V, 3, 3) float32 OpenCV intrinsics in pixels of the 137x137 image
  pose       (V, 4, 4) float32 camera-to-world, OpenGL convention (camera looks down -Z, +Y up)
  azimuth, elevation, distance, fov   (V,) float32 (degrees; distance in object units)
  category, synset, object_id, voxel_method   text
Datasets are written by a TFDS GeneratorBasedBuilder as array_record and read
with `tfds.builder_from_directory(path).as_data_source(split)`, no TensorFlow needed.
"""

import collections.abc

import numpy as np
import tensorflow_datasets as tfds

IMAGE_SIZE = 137  # Rendered/stored view size.
CROP_SIZE = 127  # Network input size (random crop at train, centre crop at eval).
VOXEL_RESOLUTION = 32
SPLITS = ("train", "validation", "test")
FILE_FORMAT = "array_record"
VERSION = "1.0.0"


def record_features():
  """The tfds FeaturesDict of one object record."""
  per_view = lambda: tfds.features.Tensor(shape=(None,), dtype=np.float32)
  return tfds.features.FeaturesDict({
      "views": tfds.features.Tensor(
          shape=(None, IMAGE_SIZE, IMAGE_SIZE, 4), dtype=np.uint8, encoding="zlib"),
      "voxels": tfds.features.Tensor(
          shape=(VOXEL_RESOLUTION,) * 3, dtype=np.bool_, encoding="zlib"),
      "K": tfds.features.Tensor(shape=(None, 3, 3), dtype=np.float32),
      "pose": tfds.features.Tensor(shape=(None, 4, 4), dtype=np.float32),
      "azimuth": per_view(),
      "elevation": per_view(),
      "distance": per_view(),
      "fov": per_view(),
      "category": tfds.features.Text(),
      "synset": tfds.features.Text(),
      "object_id": tfds.features.Text(),
      "voxel_method": tfds.features.Text(),
  })


def write_dataset(name, split_examples, data_dir, config=None, description=None,
                  beam_options=None):
  """Writes {split: iterable of (key, example)} as a TFDS array_record dataset; returns its dir.

  The directory is data_dir/name[/config]/VERSION and is what `load_split` reads. (TFDS's own
  `store_as_tfds_dataset` would do, but it imports TensorFlow to type-check its inputs.) A split
  may instead be an Apache Beam PTransform yielding (key, example); TFDS then runs the Beam
  pipeline with `beam_options` (a PipelineOptions; DirectRunner when None).
  """
  attrs = {
      "name": name,
      "VERSION": tfds.core.Version(VERSION),
      "_info": lambda self: tfds.core.DatasetInfo(
          builder=self, description=description, features=record_features()),
      "_split_generators": lambda self, dl_manager: dict(split_examples),
      "_generate_examples": lambda self, **kwargs: iter(()),
  }
  if config is not None:
    attrs["BUILDER_CONFIGS"] = [tfds.core.BuilderConfig(name=config)]
  builder_cls = type(f"R2N2Records_{name}", (tfds.core.GeneratorBasedBuilder,), attrs,
                     skip_registration=True)
  builder = builder_cls(data_dir=str(data_dir), config=config, file_format=FILE_FORMAT)
  download_config = None
  if beam_options is not None:
    download_config = tfds.download.DownloadConfig(beam_options=beam_options)
  builder.download_and_prepare(download_config=download_config)
  return str(builder.data_dir)


class DamagedRecordError(ValueError):
  """A record of a dataset file cannot be read (bit rot, truncation)."""


class NamedDataSource(collections.abc.Sequence):
  """A TFDS data source whose read errors name the shard file and the record index in it.

  (array_record says "Corrupted Riegeli/records file ... at byte N" for a damaged shard and a
  truncated one yields None records that fail to decode; neither names the file.)
  """

  def __init__(self, source, split):
    self._source, self._split = source, split
    instructions = source.dataset_info.splits[split].file_instructions
    self._files = [(i.filename, i.skip, i.take) for i in instructions]
    self._starts = np.cumsum([0] + [take for _, _, take in self._files])

  @property
  def dataset_info(self):
    return self._source.dataset_info

  def __len__(self):
    return len(self._source)

  def __iter__(self):
    for i in range(len(self)):
      yield self[i]

  def __getitem__(self, index):
    index = int(index)
    try:
      return self._source[index]
    except (RuntimeError, ValueError, OSError) as e:
      raise self._error(index, e) from e

  def __getitems__(self, indices):
    try:
      return self._source.__getitems__(list(indices))
    except (RuntimeError, ValueError, OSError):
      return [self[i] for i in indices]  # Finds (and names) the damaged record.

  def _error(self, index, error):
    shard = int(np.searchsorted(self._starts, index % max(len(self), 1), side="right")) - 1
    filename, skip, _ = self._files[min(max(shard, 0), len(self._files) - 1)]
    record = skip + index - self._starts[shard]
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    return DamagedRecordError(f"{filename}: record {record} (example {index} of split "
                              f"{self._split!r}) is unreadable; the file is damaged or truncated "
                              f"({message})")


def load_split(dataset_dir, split, **kwargs):
  """Random-access data source of one split of a dataset directory (no TensorFlow needed);
  `kwargs` go to tfds' `as_data_source` (e.g. `deserialize_method`: raw bytes for a fast reader).

  A damaged shard is a DamagedRecordError naming the file and the record.
  """
  source = tfds.builder_from_directory(str(dataset_dir)).as_data_source(split, **kwargs)
  return NamedDataSource(source, split)


def decode_text(value):
  """Text features come back from data sources as bytes; returns str."""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)
