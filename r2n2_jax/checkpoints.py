"""Orbax checkpoints under WORKDIR/checkpoints/<step>, and the run's config under WORKDIR/config.json."""

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"


def checkpoint_dir(workdir):
  return os.path.join(os.path.abspath(os.path.expanduser(workdir)), "checkpoints")


def create_manager(workdir, keep=3):
  """A CheckpointManager writing WORKDIR/checkpoints/<step> and keeping the newest `keep`."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save_config(workdir, config):
  """Writes the run's config as JSON (what evaluate/predict read back with `load_config`)."""
  with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
    f.write(config.to_json_best_effort(indent=2))


def load_config(workdir):
  """The ConfigDict a run in `workdir` was trained with."""
  path = os.path.join(os.path.expanduser(workdir), CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no config.json; is {workdir!r} a training workdir?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def latest_step(workdir):
  """The newest checkpointed step in `workdir`, or None."""
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    return None
  with ocp.CheckpointManager(directory) as manager:
    return manager.latest_step()


def restore(manager, abstract_state, step=None):
  """Restores the pytree saved at `step` (default: the latest) into the shape of `abstract_state`."""
  step = manager.latest_step() if step is None else step
  return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))


def save(manager, step, state):
  """Saves a host-local pytree (params, opt_state, step) at `step` (asynchronously)."""
  manager.save(step, args=ocp.args.StandardSave(state))


def restore_variables(workdir, config, step=None):
  """Model variables {"params": ...} of a checkpoint (default: the latest), on the default device,
  and its step. (Host arrays would be copied into every jitted call: +50 ms per prediction.)"""
  from r2n2_jax import train_state  # Local import: train_state -> train imports this module.

  directory = checkpoint_dir(workdir)
  with ocp.CheckpointManager(directory) as manager:
    available = manager.all_steps()
    if not available:
      raise FileNotFoundError(f"{directory}: no checkpoint found")
    step = max(available) if step is None else int(step)
    if step not in available:
      raise FileNotFoundError(f"{directory}: no checkpoint at step {step} (have {sorted(available)})")
    abstract = jax.eval_shape(lambda: train_state.state_to_pytree(
        train_state.create_train_state(config, jax.random.key(0))))
    restored = restore(manager, abstract, step)
  return jax.device_put({"params": restored["params"]}), step
