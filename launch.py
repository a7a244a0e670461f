"""Trains and evaluates a 3D-R2N2 variant.

  python launch.py --config configs/simple_gru_k1.py --workdir DIR [--config.batch_size=8]
  python launch.py --config configs/simple_gru_k1.py:tiny --workdir DIR   # CPU-sized run

A bad config, a workdir in use or a damaged checkpoint is one line, `launch: error: ...`, and exit
status 1; --verbosity=1 (or R2N2_TRACEBACK=1) adds the traceback.
"""

import os

from absl import app
from absl import flags
from absl import logging
import jax

from r2n2_jax import cli
from r2n2_jax import config_lib
from r2n2_jax import process_setup
from r2n2_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and config.")
flags.DEFINE_string("config", None, "Config file, optionally with ':variant'; fields are "
                    "overridden with --config.<field>=<value>.")
flags.DEFINE_bool("distributed", None, "Call jax.distributed.initialize() (multi-host). Default: "
                  "auto, when JAX_COORDINATOR_ADDRESS or a multi-task SLURM job is detected.")
flags.mark_flags_as_required(["config", "workdir"])


def _wants_distributed():
  if FLAGS.distributed is not None:
    return FLAGS.distributed
  return bool(os.environ.get("JAX_COORDINATOR_ADDRESS")) or int(
      os.environ.get("SLURM_NTASKS", "1")) > 1


def _distributed_kwargs():
  """num_processes / process_id from JAX_NUM_PROCESSES / JAX_PROCESS_ID (jax reads only the address)."""
  names = {"num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}
  return {arg: int(os.environ[env]) for arg, env in names.items() if env in os.environ}


_OVERRIDES = []  # --config.<field>=<value> flags, taken out of argv by _parse_flags.


def _parse_flags(argv):
  argv, overrides = config_lib.split_flag_overrides(argv)
  _OVERRIDES.extend(overrides)
  return app.parse_flags_with_usage(argv)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  process_setup.setup("launch.py")
  with cli.user_errors("launch"):
    _, config = config_lib.load(FLAGS.config, _OVERRIDES)
    config_lib.validate(config)  # Before jax.distributed (and again, with the devices, in train).
    run(config)


def run(config):
  if _wants_distributed():
    jax.distributed.initialize(**_distributed_kwargs())
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  train.train_and_evaluate(config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
