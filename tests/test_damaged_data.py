"""A damaged dataset shard: read errors name the file and the record."""

import os

import numpy as np
import pytest

from data_prep import records
import synthetic  # pylint: disable=g-bad-import-order  (tests/synthetic.py)


@pytest.fixture
def dataset(tmp_path):
  rng = np.random.default_rng(0)
  path = records.write_dataset("damaged", {"test": [synthetic.example(rng, i, "box") for i in range(6)]},
                               tmp_path / "data")
  shard = [os.path.join(path, n) for n in os.listdir(path) if ".array_record-" in n]
  assert len(shard) == 1
  return path, shard[0]


def _unreadable(path):
  """{index: message} of the records of the test split that fail to read."""
  source = records.load_split(path, "test")
  errors = {}
  for i in range(len(source)):
    try:
      source[i]
    except records.DamagedRecordError as e:
      errors[i] = str(e)
  return errors


def test_intact_records_read(dataset):
  assert not _unreadable(dataset[0])


@pytest.mark.parametrize("fault", ["overwrite_4k", "truncate"])
def test_damaged_shard_errors_name_the_file_and_record(dataset, fault):
  path, shard = dataset
  size = os.path.getsize(shard)
  with open(shard, "r+b") as f:
    if fault == "truncate":
      f.truncate(size // 2)
    else:
      f.seek(size // 2)
      f.write(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
  errors = _unreadable(path)
  assert errors
  for index, message in errors.items():
    assert message.startswith(f"{shard}: record {index} (example {index} of split 'test') is "
                              "unreadable; the file is damaged or truncated (")
    assert "\n" not in message
