"""Verified orbax checkpoints under WORKDIR/checkpoints/<step>, the run's config.json, the workdir.

Every step directory gets checksums.json (size and sha256 of each of its files) once orbax has
finalised it; a restore checks the files against it and the stored shapes against the config's
BEFORE orbax reads a value, so bit rot or a truncated file is one line naming the step and the
file (not tracebacks from orbax's event loop, not silently different values). Training resumes
from the newest intact checkpoint, moving damaged newer ones to WORKDIR/checkpoints.damaged/.
A save waits for its write: a failed save stops the run at its step, without its partial folder.
Loading a model for evaluate/predict restores `params` only (orbax partial restore).
"""

import contextlib
import hashlib
import json
import os
import shutil
import time

from absl import logging
from flax import traverse_util
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from r2n2_jax import cli
from r2n2_jax import config_lib
from r2n2_jax import orbax_noise
from r2n2_jax import workdir_lock
from r2n2_jax.models import build_model
from r2n2_jax.models import model_width

CONFIG_FILE = "config.json"
CHECKSUM_FILE = "checksums.json"
CROP = 127  # records.CROP_SIZE, the model's input size (not imported: keeps TFDS out of predict).
# Model fields that choose how the same parameters are computed; a resume may change them.
COMPUTE_ONLY_FIELDS = ("conv3d_impl", "dtype")


class CheckpointError(ValueError):
  """A checkpoint is missing, damaged or does not fit the config."""


class CheckpointSaveError(CheckpointError):
  """Writing a checkpoint failed (e.g. a full disk)."""


def checkpoint_dir(workdir):
  return os.path.join(os.path.abspath(os.path.expanduser(workdir)), "checkpoints")


def create_manager(workdir, keep=3):
  """A CheckpointManager writing WORKDIR/checkpoints/<step> and keeping the newest `keep`."""
  orbax_noise.drop_orbax_thread_tracebacks()
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_handlers=ocp.StandardCheckpointHandler())


# --- config.json -------------------------------------------------------------------------------

def save_config(workdir, config):
  """Writes the run's config as JSON atomically (what evaluate/predict read with `load_config`)."""
  path = os.path.join(workdir, CONFIG_FILE)
  _write_atomically(path, config.to_json_best_effort(indent=2))


def load_config(workdir):
  """The ConfigDict a run in `workdir` was trained with."""
  path = os.path.join(os.path.expanduser(workdir), CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no config.json; is {workdir!r} a training workdir?")
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except ValueError as e:
    raise CheckpointError(f"{path}: not a readable config ({cli.one_line(e)})") from None


def _write_atomically(path, text):
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def model_differences(stored, config):
  """Model fields (but COMPUTE_ONLY_FIELDS) whose values differ: ['cell: gru -> lstm', ...]."""
  old = json.loads(ml_collections.ConfigDict(stored).to_json_best_effort()).get("model", {})
  new = json.loads(config.to_json_best_effort()).get("model", {})
  for model in (old, new):  # config.json files written before `width` existed are width 1.
    model["width"] = model_width(model)
  return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
          if k not in COMPUTE_ONLY_FIELDS and old.get(k) != new.get(k)]


# --- workdir ------------------------------------------------------------------------------------

@contextlib.contextmanager
def open_workdir(workdir, config):
  """Validates config, locks the workdir and checks the config against its run; then config.json.

  Everything that can refuse the run happens before anything is written, so a bad config leaves
  a fresh workdir without config.json and a resumed one with its own. Only process 0 locks and
  writes; the lock is held until the context exits.
  """
  config_lib.validate(config, num_devices=jax.device_count())
  if jax.process_index() != 0:
    # The same checks as process 0: they open orbax CheckpointManagers, whose set-up runs
    # collectives across processes; skipping them here deadlocked a 2-process resume.
    _check_resume_config(workdir, config)
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock.WorkdirLock(workdir):
    _check_resume_config(workdir, config)
    save_config(workdir, config)
    yield


def _check_resume_config(workdir, config):
  """A workdir with checkpoints resumes only with the model of its config.json and checkpoints."""
  directory = checkpoint_dir(workdir)
  steps = _steps(directory)
  if not steps:
    return  # Nothing to resume: a new config may replace the old one.
  if os.path.exists(os.path.join(workdir, CONFIG_FILE)):
    differences = model_differences(load_config(workdir), config)
    if differences:
      raise CheckpointError(f"{workdir} holds a run of another model ({'; '.join(differences)}); "
                            "resume it with its own config or use another --workdir")
  problem = _shape_problem(_metadata(directory, steps[0]), {"params": abstract_params(config.model)},
                           only="params")
  if problem:
    raise CheckpointError(f"{directory}/{steps[0]}: the config does not fit the checkpoint "
                          f"({problem})")


# --- checksums and checks -----------------------------------------------------------------------

def _sha256(path):
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      h.update(chunk)
  return h.hexdigest()


def _files(step_dir):
  for root, _, names in os.walk(step_dir):
    for name in names:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, step_dir)
      if rel != CHECKSUM_FILE:
        yield rel, path


def write_checksums(step_dir):
  """Records size and sha256 of every file of a finalised step directory (~0.3 s per 120 MB)."""
  sums = {rel: {"size": os.path.getsize(path), "sha256": _sha256(path)}
          for rel, path in sorted(_files(step_dir))}
  _write_atomically(os.path.join(step_dir, CHECKSUM_FILE), json.dumps(sums, indent=1))


def file_problem(step_dir):
  """What is wrong with the files of a step directory, or None if they match checksums.json."""
  path = os.path.join(step_dir, CHECKSUM_FILE)
  if not os.path.exists(path):
    return f"no {CHECKSUM_FILE} (its save did not finish, or it predates checksums)"
  try:
    with open(path) as f:
      sums = json.load(f)
  except ValueError:
    return f"{CHECKSUM_FILE} is damaged"
  for rel, want in sorted(sums.items()):
    file = os.path.join(step_dir, rel)
    if not os.path.exists(file):
      return f"{rel} is missing"
    size = os.path.getsize(file)
    if size != want["size"]:
      return f"{rel} is {'truncated' if size < want['size'] else 'longer than written'} " \
             f"({size} of {want['size']} bytes)"
    if _sha256(file) != want["sha256"]:
      return f"{rel} is damaged (its sha256 differs from the one written with it)"
  return None


def _metadata(directory, step):
  """The stored tree metadata (shapes) of a step, or None where it cannot be read."""
  try:
    with ocp.CheckpointManager(directory, item_handlers=ocp.PyTreeCheckpointHandler()) as manager:
      return manager.item_metadata(step)
  except Exception:  # pylint: disable=broad-except  (a damaged _METADATA: file_problem says more)
    return None


def _flat_shapes(tree):
  flat = traverse_util.flatten_dict(_as_dict(tree), sep="/")
  return {k: tuple(getattr(v, "shape", np.shape(v)) or ()) for k, v in flat.items()}


def _as_dict(tree):
  if hasattr(tree, "items"):
    return {str(k): _as_dict(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)) and not hasattr(tree, "shape"):
    return {str(i): _as_dict(v) for i, v in enumerate(tree)}
  if hasattr(tree, "_asdict"):
    return _as_dict(tree._asdict())
  return tree


def _shape_problem(stored, expected, only=None):
  """The first leaf whose shape differs between stored metadata and an abstract tree, or None."""
  if stored is None:
    return None
  stored = _as_dict(stored.tree if hasattr(stored, "tree") else stored)
  expected = _as_dict(expected)
  if only is not None:
    stored, expected = {only: stored.get(only, {})}, {only: expected[only]}
  have, want = _flat_shapes(stored), _flat_shapes(expected)
  for name in sorted(set(have) | set(want)):
    if have.get(name) != want.get(name):
      return (f"parameter {name} has shape {have.get(name)} in the checkpoint but "
              f"{want.get(name)} in the config")
  return None


def abstract_params(model_config):
  """ShapeDtypeStructs of the model's params (jax.eval_shape of init: nothing is computed)."""
  views = jax.ShapeDtypeStruct((1, 1, CROP, CROP, 3), np.float32)
  mask = jax.ShapeDtypeStruct((1, 1), bool)
  return jax.eval_shape(build_model(model_config).init, jax.random.key(0), views, mask)["params"]


def step_problem(directory, step, abstract, only=None):
  """Files against checksums.json, then stored shapes against `abstract`; None if intact."""
  step_dir = os.path.join(directory, str(step))
  return file_problem(step_dir) or _shape_problem(_metadata(directory, step), abstract, only)


def _not_loadable(workdir, detail):
  return CheckpointError(f"{workdir}: the config does not describe a loadable model for its "
                         f"checkpoint ({detail})")


def _steps(directory):
  """Finalised steps of a checkpoint directory, newest first (orbax's tmp folders excluded)."""
  if not os.path.isdir(directory):
    return []
  return sorted((int(n) for n in os.listdir(directory) if n.isdigit()), reverse=True)


def latest_step(workdir):
  """The newest checkpointed step in `workdir`, or None."""
  steps = _steps(checkpoint_dir(workdir))
  return steps[0] if steps else None


def _newest_intact(directory, abstract, only=None, step=None):
  """(step, [damaged newer steps]) of the newest intact checkpoint; logs one line per damaged one."""
  steps = _steps(directory)
  if step is not None:
    if step not in steps:
      raise FileNotFoundError(f"{directory}: no checkpoint at step {step} (have {sorted(steps)})")
    steps = [step]
  if not steps:
    raise FileNotFoundError(f"{directory}: no checkpoint found")
  damaged = []
  for s in steps:
    problem = step_problem(directory, s, abstract, only)
    if problem is None:
      return s, damaged
    damaged.append((s, problem))
    logging.warning("checkpoint %s/%d is unusable: %s", directory, s, problem)
  if all(" has shape " in p for _, p in damaged):  # Not damage: the config is another model's.
    raise _not_loadable(os.path.dirname(directory), damaged[0][1])
  if step is not None:
    raise CheckpointError(f"checkpoint {directory}/{step} is unusable: {damaged[0][1]}")
  raise CheckpointError(f"{directory}: no intact checkpoint (" +
                        "; ".join(f"step {s}: {p}" for s, p in damaged) + ")")


def _quarantine(directory, steps):
  """Moves damaged step folders to <directory>.damaged/ (a re-save of their step would clash)."""
  target = directory + ".damaged"
  os.makedirs(target, exist_ok=True)
  for step in steps:
    destination = os.path.join(target, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.move(os.path.join(directory, str(step)), destination)
    logging.warning("moved damaged checkpoint %s/%d to %s", directory, step, destination)


# --- training: restore with fallback, save ------------------------------------------------------

def restore_newest_intact(manager, abstract_state):
  """The newest intact checkpoint as a host pytree shaped like `abstract_state`, or None if none.

  Damaged or mismatching newer checkpoints are logged (one line each) and moved aside; if every
  checkpoint is damaged, raises CheckpointError listing them and leaves them in place.
  """
  directory = os.fspath(manager.directory)
  if not _steps(directory):
    return None
  step, damaged = _newest_intact(directory, abstract_state, only="params")
  if damaged:
    if jax.process_index() == 0:
      _quarantine(directory, [s for s, _ in damaged])
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("r2n2_checkpoints_quarantined")
    manager.reload()
  return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))


def save(manager, step, state):
  """Saves a host-local pytree (params, opt_state, step) at `step` and waits for it.

  Waiting (~3 s for the 386 MB state, on 2 CPU cores) is what lets a failed write stop the run
  at its own step: the partial folder is removed, older checkpoints stay as they were, and
  CheckpointSaveError says why. Then process 0 writes the step's checksums.json.
  """
  directory = os.fspath(manager.directory)
  step_dir = os.path.join(directory, str(step))
  try:
    with orbax_noise.quiet_closed_loop_tracebacks():
      try:
        manager.save(step, args=ocp.args.StandardSave(state))
        manager.wait_until_finished()
        manager.check_for_errors()
        if jax.process_index() == 0:
          if not os.path.isdir(step_dir):
            raise OSError(f"orbax did not finalise {step_dir}")
          write_checksums(step_dir)
      except Exception:  # pylint: disable=broad-except  (clean up while the filter is on)
        if jax.process_index() == 0:
          _remove_partial(directory, step)
        raise
  except Exception as e:  # pylint: disable=broad-except  (any failure: say it in one line)
    reason = "no space left on device" if "No space left" in str(e) else cli.one_line(e)
    raise CheckpointSaveError(
        f"saving the checkpoint of step {step} to {directory} failed ({reason}); its "
        "partial folder was removed, the older checkpoints are intact") from e


def _remove_partial(directory, step, settle_s=1.0, timeout_s=60.0):
  """Removes the step's folder and orbax's tmp folder, again until none reappears for settle_s
  (writes of the other arrays are still in flight when the first one fails)."""
  deadline, quiet_since = time.time() + timeout_s, time.time()
  while time.time() < deadline and time.time() - quiet_since < settle_s:
    names = [n for n in (os.listdir(directory) if os.path.isdir(directory) else ())
             if n == str(step) or n.startswith(f"{step}.orbax-checkpoint-tmp")]
    for name in names:
      shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    if names:
      quiet_since = time.time()
    time.sleep(0.1)


# --- evaluate / predict: params only ------------------------------------------------------------

def restore_variables(workdir, config, step=None):
  """({"params": ...} on the default device, step) of a checkpoint (default: the newest intact).

  Only the params subtree is read (orbax partial restore): no Adam state, no optimizer, no
  train state. A damaged or mismatching checkpoint is a CheckpointError naming it; without
  `step`, older intact ones are tried (a warning line per skipped one).
  (Host arrays would be copied into every jitted call: +50 ms per prediction.)
  """
  directory = checkpoint_dir(workdir)
  try:
    config_lib.validate_model(config)
    abstract = {"params": abstract_params(config.model)}
  except (KeyError, TypeError, AttributeError, ValueError) as e:
    raise _not_loadable(workdir, cli.one_line(e)) from None
  step, _ = _newest_intact(directory, abstract, only="params",
                           step=None if step is None else int(step))
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
  with ocp.CheckpointManager(directory, item_handlers=ocp.PyTreeCheckpointHandler()) as manager:
    restored = manager.restore(step, args=ocp.args.PyTreeRestore(
        item=abstract, restore_args=restore_args, partial_restore=True))
  return jax.device_put({"params": restored["params"]}), step
