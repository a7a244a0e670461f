"""Trains and evaluates a 3D-R2N2 variant.

  python launch.py --config configs/simple_gru_k1.py --workdir DIR [--config.batch_size=8]
  python launch.py --config configs/simple_gru_k1.py:tiny --workdir DIR   # CPU-sized run

A bad config, a workdir in use or a damaged checkpoint is one line, `launch: error: ...`, and exit
status 1; --verbosity=1 (or R2N2_TRACEBACK=1) adds the traceback.
Several processes: JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID, or srun (see
r2n2_jax/distributed.py). SIGTERM or Ctrl-C checkpoints the current step and exits with 128 + the
signal number; the same command resumes.
"""

from absl import app
from absl import flags

from r2n2_jax import cli
from r2n2_jax import config_lib
from r2n2_jax import console
from r2n2_jax import distributed
from r2n2_jax import process_setup
from r2n2_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and config.")
flags.DEFINE_string("config", None, "Config file, optionally with ':variant'; fields are "
                    "overridden with --config.<field>=<value>.")
flags.DEFINE_bool("distributed", None, "Call jax.distributed.initialize() (multi-host). Default: "
                  "auto, when JAX_COORDINATOR_ADDRESS is set or under an srun step of several "
                  "tasks.")
flags.mark_flags_as_required(["config", "workdir"])


_OVERRIDES = []  # --config.<field>=<value> flags, taken out of argv by _parse_flags.


def _parse_flags(argv):
  argv, overrides = config_lib.split_flag_overrides(argv)
  _OVERRIDES.extend(overrides)
  return app.parse_flags_with_usage(argv)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  process_setup.setup("launch.py")
  console.quiet_libraries()
  with cli.user_errors("launch"):
    _, config = config_lib.load(FLAGS.config, _OVERRIDES)
    config_lib.validate(config)  # Before jax.distributed (and again, with the devices, in train).
    spec = distributed.initialize(FLAGS.distributed)  # A malformed environment: a ValueError.
    distributed.log_startup(spec)
    train.train_and_evaluate(config, FLAGS.workdir)  # SIGTERM/Ctrl-C: exit 128 + signal (cli).


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
