"""Trains and evaluates a 3D-R2N2 variant.

  python launch.py --config configs/simple_gru_k1.py --workdir DIR [--config.batch_size=8]
  python launch.py --config configs/simple_gru_k1.py:tiny --workdir DIR   # CPU-sized run

Several processes: JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID, or srun (see
r2n2_jax/distributed.py). SIGTERM or Ctrl-C checkpoints the current step and exits with 128 + the
signal number; the same command resumes.
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from r2n2_jax import console
from r2n2_jax import cpu_flags
from r2n2_jax import distributed
from r2n2_jax import preemption
from r2n2_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and config.")
config_flags.DEFINE_config_file("config", None, "Config file, optionally with ':variant'.",
                                lock_config=True)
flags.DEFINE_bool("distributed", None, "Call jax.distributed.initialize() (multi-host). Default: "
                  "auto, when JAX_COORDINATOR_ADDRESS is set or under an srun step of several "
                  "tasks.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  console.quiet_libraries()
  try:
    spec = distributed.initialize(FLAGS.distributed)
  except ValueError as e:  # A malformed launch environment: one line, no traceback.
    sys.exit(f"launch.py: {e}")
  distributed.log_startup(spec)
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except preemption.Interrupted as e:
    logging.warning("Exiting with status %d (%s)", e.exit_code, e)
    logging.flush()
    sys.exit(e.exit_code)


if __name__ == "__main__":
  cpu_flags.reexec_with_huge_page_malloc()
  app.run(main)
