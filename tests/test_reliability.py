"""launch.py against real faults: a second training on a workdir, SIGKILL, a config that does not
fit the checkpoints, a damaged newest checkpoint, a damaged dataset shard."""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from r2n2_jax import checkpoints
from r2n2_jax import workdir_lock
import synthetic  # pylint: disable=g-bad-import-order  (tests/synthetic.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs/simple_gru_k1.py") + ":tiny,narrow"

pytestmark = pytest.mark.slow


def _cmd(workdir, data_dir, steps, *overrides):
  return [sys.executable, os.path.join(ROOT, "launch.py"), "--config", CONFIG,
          "--workdir", str(workdir), f"--config.data_dir={data_dir}",
          f"--config.num_train_steps={steps}", "--config.checkpoint_every_steps=2",
          "--config.eval_every_steps=100", "--config.log_every_steps=1", *overrides]


def _env():
  return {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def _launch(*args, **kwargs):
  return subprocess.run(_cmd(*args, **kwargs), cwd=ROOT, env=_env(), capture_output=True,
                        text=True, timeout=600, check=False)


def _last_line(proc):
  return proc.stderr.strip().splitlines()[-1]


def _overwrite_4k(path):
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.seek(size // 2)
    f.write(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())


def test_a_second_training_is_refused_and_a_killed_one_does_not_block(tiny_config, tmp_path):
  workdir = tmp_path / "run"
  first = subprocess.Popen(_cmd(workdir, tiny_config.data_dir, 10_000), cwd=ROOT, env=_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    lock_file = workdir / workdir_lock.LOCK_FILE
    deadline = time.time() + 300
    while not (lock_file.exists() and f'"pid": {first.pid}' in lock_file.read_text()):
      assert first.poll() is None and time.time() < deadline, "the first training did not start"
      time.sleep(0.5)
    start = time.time()
    second = _launch(workdir, tiny_config.data_dir, 4)
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert _last_line(second) == (
        f"launch: error: {workdir} is in use by another training (host {socket.gethostname()}, "
        f"pid {first.pid}, since {json.loads(lock_file.read_text())['since']}); stop it or use "
        "another --workdir")
    assert time.time() - start < 120  # Refused before any data or compile (a launch is ~30 s here).
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  # The SIGKILLed holder's lock is gone with it: a restart trains (and resumes if it can).
  third = _launch(workdir, tiny_config.data_dir, 2)
  assert third.returncode == 0, third.stderr[-3000:]


@pytest.fixture(scope="module")
def finished_run(tiny_config, tmp_path_factory):
  """A k1 GRU workdir trained 4 steps, checkpoints at 2 and 4."""
  workdir = tmp_path_factory.mktemp("finished") / "run"
  proc = _launch(workdir, tiny_config.data_dir, 4)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


@pytest.mark.parametrize("override, difference", [
    ("--config.model.kernel_size=3", "kernel_size: 1 -> 3"),
    ("--config.model.cell=lstm", "cell: 'gru' -> 'lstm'"),
])
def test_resume_with_another_model_is_refused_and_keeps_config_json(tiny_config, finished_run,
                                                                     override, difference):
  before = (finished_run / "config.json").read_text()
  proc = _launch(finished_run, tiny_config.data_dir, 6, override)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert _last_line(proc) == (f"launch: error: {finished_run} holds a run of another model "
                              f"({difference}); resume it with its own config or use another "
                              "--workdir")
  assert (finished_run / "config.json").read_text() == before
  assert sorted(os.listdir(finished_run / "checkpoints")) == ["2", "4"]


def test_resume_falls_back_from_a_damaged_newest_checkpoint(tiny_config, finished_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished_run, workdir)
  step_dir = workdir / "checkpoints" / "4"
  files = [os.path.join(r, n) for r, _, names in os.walk(step_dir) for n in names]
  _overwrite_4k(max(files, key=os.path.getsize))
  proc = _launch(workdir, tiny_config.data_dir, 5)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stderr
  assert f"checkpoint {workdir}/checkpoints/4 is unusable: " in out and "is damaged" in out
  assert "at step 2" in out and "Resumed from" in out
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "5"]  # 4 re-trained from 2.
  assert [n.split("-")[0] for n in os.listdir(workdir / "checkpoints.damaged")] == ["4"]
  # The re-trained step 4 equals the original one before the damage: resuming is exact.
  config = checkpoints.load_config(workdir)
  retrained, _ = checkpoints.restore_variables(workdir, config, 4)
  original, _ = checkpoints.restore_variables(finished_run, config, 4)
  for a, b in zip(jax_leaves(retrained), jax_leaves(original)):
    np.testing.assert_array_equal(a, b)


def jax_leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_a_damaged_dataset_shard_is_named(tiny_config, tmp_path):
  from r2n2_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  dataset = tmp_path / "damaged_dataset"
  shutil.copytree(input_pipeline.dataset_dir(tiny_config), dataset)
  shards = sorted(p for p in os.listdir(dataset) if "-train.array_record" in p)
  for shard in shards:  # Truncated (as by a full disk or an interrupted copy).
    with open(dataset / shard, "r+b") as f:
      f.truncate(os.path.getsize(dataset / shard) // 2)
  proc = _launch(tmp_path / "run", tiny_config.data_dir, 2, f"--config.dataset={dataset}")
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  last = _last_line(proc)
  assert last.startswith(f"launch: error: {dataset}/") and "-train.array_record-" in last
  assert "is unreadable; the file is damaged or truncated" in last and "record " in last


def test_a_full_disk_stops_training_at_the_failed_save(tiny_config, tmp_path):
  """An 8 MiB tmpfs holds one checkpoint of the narrow tiny run (params and Adam's two moments:
  3 x 485,334 float32 = 5.6 MiB once trained), not two."""
  with synthetic.mounted_tmpfs(tmp_path / "tmpfs", "8M") as mount_point:
    mount_point = pathlib.Path(mount_point)
    workdir = mount_point / "run"
    proc = _launch(workdir, tiny_config.data_dir, 8)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert _last_line(proc) == (
        f"launch: error: saving the checkpoint of step 4 to {workdir}/checkpoints failed (no space "
        "left on device); its partial folder was removed, the older checkpoints are intact")
    assert "step 4: " in proc.stderr and "step 5: " not in proc.stderr  # Stopped at its step.
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]
    config = checkpoints.load_config(workdir)
    _, step = checkpoints.restore_variables(workdir, config)
    assert step == 2
