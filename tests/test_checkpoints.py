"""Checkpoints with real faults: bytes overwritten, files truncated, a full tmpfs, a lost checksum."""

import logging
import os

import jax
import numpy as np
import pytest

from configs import default
from r2n2_jax import checkpoints
from r2n2_jax import train_state
import synthetic  # pylint: disable=g-bad-import-order  (tests/synthetic.py)


def _tree(step):
  """A small train-state-like pytree whose values depend on the step (1 MiB of float32)."""
  rng = np.random.default_rng(step)
  return {"params": {"w": rng.standard_normal((512, 512)).astype(np.float32),
                     "b": rng.standard_normal((512,)).astype(np.float32)},
          "step": np.int32(step)}


def _abstract():
  return jax.eval_shape(lambda: _tree(0))


@pytest.fixture
def workdir(tmp_path):
  """A workdir with checkpoints of steps 1, 2, 3 (keep 3)."""
  manager = checkpoints.create_manager(str(tmp_path), keep=3)
  for step in (1, 2, 3):
    checkpoints.save(manager, step, _tree(step))
  manager.close()
  return str(tmp_path)


def _biggest_file(step_dir):
  files = [os.path.join(r, n) for r, _, names in os.walk(step_dir) for n in names]
  return max(files, key=os.path.getsize)


def _overwrite_4k(path):
  """Bit rot: 4 KiB in the middle of the file replaced by random bytes, size unchanged."""
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.seek(size // 2)
    f.write(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
  assert os.path.getsize(path) == size


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _restore(workdir):
  manager = checkpoints.create_manager(workdir)
  try:
    return checkpoints.restore_newest_intact(manager, _abstract()), manager
  finally:
    manager.close()


def test_every_save_writes_checksums_that_verify(workdir):
  directory = checkpoints.checkpoint_dir(workdir)
  for step in (1, 2, 3):
    assert os.path.exists(os.path.join(directory, str(step), checkpoints.CHECKSUM_FILE))
    assert checkpoints.file_problem(os.path.join(directory, str(step))) is None
  restored, _ = _restore(workdir)
  np.testing.assert_array_equal(restored["params"]["w"], _tree(3)["params"]["w"])


@pytest.mark.parametrize("damage, problem", [(_overwrite_4k, "is damaged"), (_truncate, "is truncated")])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(workdir, damage, problem, caplog):
  directory = checkpoints.checkpoint_dir(workdir)
  damaged_file = _biggest_file(os.path.join(directory, "3"))
  damage(damaged_file)
  with caplog.at_level(logging.WARNING):
    restored, manager = _restore(workdir)
  for key in ("w", "b"):  # Exactly step 2's values, not a mix.
    np.testing.assert_array_equal(restored["params"][key], _tree(2)["params"][key])
  assert int(restored["step"]) == 2
  warning = [r.getMessage() for r in caplog.records if "unusable" in r.getMessage()]
  assert len(warning) == 1 and f"{directory}/3 is unusable" in warning[0]
  assert problem in warning[0] and os.path.relpath(damaged_file, os.path.join(directory, "3")) \
      in warning[0]
  # Moved aside, so that the resumed run can save step 3 again.
  assert sorted(os.listdir(directory)) == ["1", "2"]
  assert [n.split("-")[0] for n in os.listdir(directory + ".damaged")] == ["3"]
  assert manager.all_steps() == [1, 2]


def test_no_intact_checkpoint_stops_with_one_line_and_keeps_them(workdir):
  directory = checkpoints.checkpoint_dir(workdir)
  for step in (1, 2, 3):
    _overwrite_4k(_biggest_file(os.path.join(directory, str(step))))
  with pytest.raises(checkpoints.CheckpointError) as error:
    _restore(workdir)
  message = str(error.value)
  assert "\n" not in message and "no intact checkpoint" in message
  assert all(f"step {s}:" in message for s in (1, 2, 3))
  assert sorted(os.listdir(directory)) == ["1", "2", "3"]  # Nothing moved: nothing to resume from.


def test_a_save_interrupted_before_its_checksums_is_not_restored(workdir):
  directory = checkpoints.checkpoint_dir(workdir)
  os.remove(os.path.join(directory, "3", checkpoints.CHECKSUM_FILE))
  restored, _ = _restore(workdir)
  assert int(restored["step"]) == 2


def test_shape_mismatch_is_named(workdir):
  directory = checkpoints.checkpoint_dir(workdir)
  abstract = jax.eval_shape(lambda: {**_tree(0), "params": {"w": np.zeros((512, 256), np.float32),
                                                             "b": np.zeros(512, np.float32)}})
  problem = checkpoints.step_problem(directory, 3, abstract, only="params")
  assert problem == ("parameter params/w has shape (512, 512) in the checkpoint but (512, 256) in "
                     "the config")


@pytest.fixture
def small_tmpfs(tmp_path):
  """A 3 MiB tmpfs: room for one 1 MiB checkpoint (+ its temporary copy), not for three."""
  with synthetic.mounted_tmpfs(tmp_path / "tmpfs", "3M") as mount_point:
    yield mount_point


def test_failed_save_on_a_full_disk_stops_at_its_step_and_leaves_no_partial_folder(small_tmpfs):
  manager = checkpoints.create_manager(small_tmpfs, keep=3)
  checkpoints.save(manager, 1, _tree(1))
  saved = 1
  with pytest.raises(checkpoints.CheckpointSaveError) as error:
    for step in (2, 3, 4):  # The disk fills up at one of these.
      checkpoints.save(manager, step, _tree(step))
      saved = step
  failed = saved + 1
  message = str(error.value)
  assert "\n" not in message
  assert f"step {failed}" in message and "no space left on device" in message
  directory = checkpoints.checkpoint_dir(small_tmpfs)
  assert sorted(os.listdir(directory)) == [str(s) for s in range(1, saved + 1)]  # No tmp folder.
  restored, _ = _restore(small_tmpfs)
  np.testing.assert_array_equal(restored["params"]["w"], _tree(saved)["params"]["w"])


@pytest.fixture(scope="module")
def model_workdir(tmp_path_factory):
  """A workdir with config.json and two checkpoints (steps 1, 2) of the real tiny model."""
  return synthetic.write_workdir(str(tmp_path_factory.mktemp("model_run")),
                                 default.get_config("tiny,narrow"), steps=(1, 2), seeds=(1, 2))


def test_restore_variables_reads_params_only_and_skips_a_damaged_newest(model_workdir, tmp_path):
  import shutil
  config = checkpoints.load_config(model_workdir)
  variables, step = checkpoints.restore_variables(model_workdir, config)
  assert step == 2 and set(variables) == {"params"}
  expected = train_state.create_train_state(config, jax.random.key(2)).params
  for a, b in zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)

  damaged = str(tmp_path / "damaged")
  shutil.copytree(model_workdir, damaged)
  _overwrite_4k(_biggest_file(os.path.join(checkpoints.checkpoint_dir(damaged), "2")))
  _, step = checkpoints.restore_variables(damaged, config)
  assert step == 1  # The newest intact one; nothing is moved (evaluate is read-only).
  assert sorted(os.listdir(checkpoints.checkpoint_dir(damaged))) == ["1", "2"]
  with pytest.raises(checkpoints.CheckpointError, match=r"/2 is unusable|step 2: .* is damaged"):
    checkpoints.restore_variables(damaged, config, step=2)


def test_open_workdir_checks_before_it_writes_and_holds_the_lock(model_workdir, tmp_path):
  import shutil
  from r2n2_jax import config_lib, workdir_lock
  workdir = str(tmp_path / "run")
  shutil.copytree(model_workdir, workdir)
  before = open(os.path.join(workdir, "config.json")).read()
  other = default.get_config("tiny,narrow")
  other.model.cell = "lstm"
  with pytest.raises(checkpoints.CheckpointError, match=r"holds a run of another model \(cell: "
                     r"'gru' -> 'lstm'\); resume it with its own config"):
    with checkpoints.open_workdir(workdir, other):
      pass
  assert open(os.path.join(workdir, "config.json")).read() == before
  os.remove(os.path.join(workdir, "config.json"))  # Without config.json the shapes still decide.
  other = default.get_config("tiny,narrow")
  other.model.kernel_size = 1
  with pytest.raises(checkpoints.CheckpointError, match="the config does not fit the checkpoint "
                     r"\(parameter params/.* has shape"):
    with checkpoints.open_workdir(workdir, other):
      pass
  assert not os.path.exists(os.path.join(workdir, "config.json"))

  same = default.get_config("tiny,narrow")
  same.model.conv3d_impl = "xla"  # How the same parameters are computed: may change on resume.
  same.num_train_steps = 40
  with checkpoints.open_workdir(workdir, same):
    assert checkpoints.load_config(workdir).num_train_steps == 40
    with pytest.raises(workdir_lock.WorkdirLockedError, match=f"pid {os.getpid()}"):
      workdir_lock.WorkdirLock(workdir).acquire()
  workdir_lock.WorkdirLock(workdir).acquire().release()

  fresh = str(tmp_path / "fresh")
  bad = default.get_config("tiny,narrow")
  bad.model.kernel_size = 2
  with pytest.raises(config_lib.ConfigError, match="kernel_size=2"):
    with checkpoints.open_workdir(fresh, bad):
      pass
  assert not os.path.exists(fresh)


def test_model_input_size_matches_the_records():
  from data_prep import records
  assert checkpoints.CROP == records.CROP_SIZE


def test_a_config_json_from_before_width_existed_is_the_paper_width():
  stored = default.get_config("tiny").to_dict()
  del stored["model"]["width"]
  assert checkpoints.model_differences(stored, default.get_config("tiny")) == []
  assert checkpoints.model_differences(stored, default.get_config("tiny,narrow")) == [
      "width: 1.0 -> 0.125"]
