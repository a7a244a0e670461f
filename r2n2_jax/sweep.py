"""Trains and evaluates several variants one after another, then compares them.

  python -m r2n2_jax.sweep --root ROOT [--configs CFG[:arg] ...] [--arg tiny] [--set x=y ...]
      [--train_eval_objects N]

Each config trains into ROOT/<config name>[_<arg>] (train.train_and_evaluate resumes from its
latest checkpoint; finished runs are not retrained), is evaluated on the test split (skipped if
eval/metrics.json is already of the latest step) and, for the table's train columns, on the first
N train objects; the sweep ends with `report` of all runs into ROOT/report. Default configs: the
paper's 8 variants configs/{simple,residual}_{gru,lstm}_k{1,3}.py.
"""

import argparse
import json
import os

from absl import logging

from configs import VARIANTS  # The paper's 8 variants.
from r2n2_jax import checkpoints
from r2n2_jax import cli
from r2n2_jax import config_lib
from r2n2_jax import evaluate
from r2n2_jax import process_setup
from r2n2_jax import report
from r2n2_jax import train



def load_config(spec, overrides=()):
  """'path.py[:arg]' (or a variant name) plus 'dotted.key=value' overrides -> (name, ConfigDict)."""
  name, config = config_lib.load(spec, overrides)
  return name, config_lib.validate(config)


def _evaluated_step(workdir, split):
  path = os.path.join(evaluate.eval_dir(workdir, split), "metrics.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)["step"]


def run_one(config, workdir, train_eval_objects):
  """Trains (unless finished) and evaluates one config in `workdir`."""
  step = checkpoints.latest_step(workdir)
  if step is None or step < config.num_train_steps:
    logging.info("training %s from step %s", workdir, step or 0)
    train.train_and_evaluate(config, workdir)
    step = checkpoints.latest_step(workdir)
  splits = [("test", -1)] + ([("train", train_eval_objects)] if train_eval_objects else [])
  for split, max_objects in splits:
    if _evaluated_step(workdir, split) != step:
      evaluate.evaluate(config, workdir, split, max_objects=max_objects)


def sweep(root, specs=VARIANTS, arg=None, overrides=(), train_eval_objects=64):
  """Runs every config spec into ROOT/<name> and writes ROOT/report; returns the report table."""
  workdirs = []
  for spec in specs:
    if arg and ":" not in spec:
      spec = f"{spec}:{arg}"
    name, config = load_config(spec, overrides)
    workdir = os.path.join(os.path.abspath(os.path.expanduser(root)), name)
    run_one(config, workdir, train_eval_objects)
    workdirs.append(workdir)
  return report.write_report(workdirs, os.path.join(root, "report"))


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m r2n2_jax.sweep", description=__doc__.split("\n")[0])
  parser.add_argument("--root", required=True, help="Directory holding one sub-directory per run.")
  parser.add_argument("--configs", nargs="+", default=list(VARIANTS),
                      help="Config files (path.py[:arg]) or variant names; default: the 8 variants.")
  parser.add_argument("--arg", help="Config argument for specs without ':arg' (e.g. tiny).")
  parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                      help="Overrides applied to every config, e.g. num_train_steps=1000.")
  parser.add_argument("--train_eval_objects", type=int, default=64,
                      help="Train objects evaluated for the table's train columns (0: none).")
  cli.add_verbosity_flag(parser)
  args = parser.parse_args(argv)
  cli.set_verbosity(args.verbosity)
  with cli.user_errors("sweep"):
    table = sweep(args.root, args.configs, args.arg, args.set, args.train_eval_objects)
  print(table)


if __name__ == "__main__":
  process_setup.setup("sweep")  # Here, not in main(): it may re-run the process (huge pages).
  main()
