"""The authors' trained 3D-R2N2 (Theano weights) in and out of a workdir.

  python -m r2n2_jax.import_weights --original ResidualGRUNet.npy --workdir W [--dataset DIR]
  python -m r2n2_jax.import_weights --workdir W --export-original OUT.npy [--step N]

Import writes W/config.json (configs/residual_gru_k3.py or simple_gru_k3.py, detected from the
file, with the ":original" variant: RGB / 255 as the authors' code feeds it) and a step-0
checkpoint with a fresh Adam state, which `evaluate`, `predict` and `launch.py` (fine-tuning)
restore. `--dataset` records the TFDS directory `evaluate` reads (e.g. the ShapeNet build).
Export writes a workdir's simple_gru_k3 / residual_gru_k3 parameters in the original's format.
The file is read without running pickled code (r2n2_jax/original_format.py).
"""

import argparse
import importlib
import os

import jax
from flax.training import train_state as flax_train_state

from r2n2_jax import checkpoints
from r2n2_jax import cli
from r2n2_jax import original_format
from r2n2_jax import train_state

ORIGINAL_VARIANT = "original"


def original_config(network, dataset=None):
  """The full config of an original network, with the original's input handling."""
  module = importlib.import_module(f"configs.{original_format.CONFIGS[network]}")
  config = module.get_config(ORIGINAL_VARIANT)
  if dataset is not None:
    config.dataset = dataset
  return config


def state_with_params(config, params):
  """The checkpointed pytree of a new training state (step 0, Adam moments zero) of `params`.

  Built around the given params instead of through train_state.create_train_state, whose jitted
  initialisation compiles the whole model only to be thrown away (99 s of an import on the loaded
  2-core test machine; the import now takes ~6 s there).
  """
  state = flax_train_state.TrainState.create(apply_fn=None, params=params,
                                             tx=train_state.create_optimizer(config))
  return train_state.state_to_pytree(state)


def abstract_state(config):
  """The shapes of the pytree `train` checkpoints for config (traced, nothing computed)."""
  return jax.eval_shape(lambda: train_state.state_to_pytree(
      train_state.create_train_state(config, jax.random.key(0))))


def import_original(path, workdir, dataset=None):
  """Writes workdir/config.json and a step-0 checkpoint of an original weight file; the network."""
  arrays = original_format.load_arrays(path)
  network = original_format.detect_network(arrays, path)
  config = original_config(network, dataset)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if checkpoints.latest_step(workdir) is not None:
    raise ValueError(f"{workdir}: already holds checkpoints; import into a new workdir")
  expected = abstract_state(config)
  params = original_format.to_params(arrays, expected["params"], network, path)
  state = state_with_params(config, params)
  os.makedirs(workdir, exist_ok=True)
  checkpoints.save_config(workdir, config)
  manager = checkpoints.create_manager(workdir, config.keep_checkpoints)
  checkpoints.save(manager, 0, state)
  manager.wait_until_finished()
  manager.close()
  return network


def export_original(workdir, path, step=None):
  """Writes the parameters of workdir's checkpoint (default: latest) in the original's format."""
  config = checkpoints.load_config(workdir)
  network = original_format.network_of(config.model)
  variables, step = checkpoints.restore_variables(workdir, config, step)
  original_format.save_arrays(path, original_format.to_arrays(jax.device_get(variables["params"]),
                                                              network))
  return network, step


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m r2n2_jax.import_weights",
                                   description="Imports / exports the original 3D-R2N2 weights.")
  parser.add_argument("--workdir", required=True, help="Workdir to create (import) or read (export).")
  action = parser.add_mutually_exclusive_group(required=True)
  action.add_argument("--original", help="Original weight file to import (e.g. ResidualGRUNet.npy).")
  action.add_argument("--export-original", help="Write the workdir's weights to this .npy file.")
  parser.add_argument("--dataset", default=None,
                      help="Import: TFDS dataset directory recorded as config.dataset.")
  parser.add_argument("--step", type=int, default=None, help="Export: checkpoint step (default latest).")
  cli.add_verbosity_flag(parser)
  args = parser.parse_args(argv)
  cli.set_verbosity(args.verbosity)
  with cli.user_errors("import_weights"):
    if args.original:
      network = import_original(args.original, args.workdir, args.dataset)
      print(f"imported {network} from {args.original} into {args.workdir} "
            f"(configs/{original_format.CONFIGS[network]}.py:{ORIGINAL_VARIANT}, step 0)")
    else:
      network, step = export_original(args.workdir, args.export_original, args.step)
      print(f"wrote {network} weights of {args.workdir} step {step} to {args.export_original}")


if __name__ == "__main__":
  main()
