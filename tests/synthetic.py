"""Shared test data, made fast and without EGL: synthetic records, a workdir holding real
checkpoints of the tiny model, and a real (small) tmpfs. Tests import it as `synthetic` (pytest
puts tests/ on sys.path for tests/conftest.py)."""

import contextlib
import os
import subprocess

import jax
import numpy as np
import pytest

from r2n2_jax import checkpoints
from r2n2_jax import train_state

NUM_VIEWS = 4  # Views per synthetic record: the evaluation protocol's counts stop at 4.


def example(rng, index, category, num_views=NUM_VIEWS):
  """(key, record) whose silhouettes and voxels are boxes of a per-object size (content arbitrary)."""
  size = 6 + 3 * index
  voxels = np.zeros((32, 32, 32), bool)
  voxels[16 - size // 2:16 + size // 2, 10:22 if category == "box" else 14:18, 8:24] = True
  views = np.zeros((num_views, 137, 137, 4), np.uint8)
  views[..., :3] = rng.integers(0, 255, (num_views, 1, 1, 3))
  views[:, 40:100, 68 - 4 * size:69 + 4 * size, 3] = 255
  per_view = np.zeros(num_views, np.float32)
  return f"{category}_{index}", {
      "views": views, "voxels": voxels, "K": np.tile(np.eye(3, dtype=np.float32), (num_views, 1, 1)),
      "pose": np.tile(np.eye(4, dtype=np.float32), (num_views, 1, 1)), "azimuth": per_view,
      "elevation": per_view, "distance": per_view, "fov": per_view, "category": category,
      "synset": "", "object_id": f"{category}_{index}", "voxel_method": "synthetic"}


def write_workdir(workdir, config, steps=(1,), seeds=None):
  """`workdir` with config.json and untrained checkpoints of config's model at `steps`
  (initialised from jax.random.key(seed), seeds default 0); returns workdir."""
  os.makedirs(workdir, exist_ok=True)
  checkpoints.save_config(workdir, config)
  manager = checkpoints.create_manager(workdir)
  for step, seed in zip(steps, seeds or [0] * len(steps)):
    state = train_state.create_train_state(config, jax.random.key(seed))
    checkpoints.save(manager, step, jax.device_get(train_state.state_to_pytree(state)))
  manager.close()
  return str(workdir)


@contextlib.contextmanager
def mounted_tmpfs(mount_point, size):
  """A real tmpfs of `size` (e.g. "3M") at mount_point; skips the test where mounting is refused."""
  os.makedirs(mount_point, exist_ok=True)
  result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                          capture_output=True, text=True, check=False)
  if result.returncode:
    pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()})")
  try:
    yield str(mount_point)
  finally:
    subprocess.run(["umount", "-l", str(mount_point)], check=False)
