"""The train step under glibc malloc's default and on transparent huge pages, side by side.

  python benchmarks/malloc.py [--config configs/simple_gru_k3.py] [--batch_size 4] [--views 5]
      [--steps 4] [--vs-torch]

glibc reads GLIBC_TUNABLES once at process start, so each setting runs in its own subprocess (one
after the other, same machine): `glibc.malloc.hugetlb=0` (glibc's default) and
`r2n2_jax.cpu_flags.MALLOC_TUNABLE` (what the entry points run with). Prints per setting the
median step time, the minor page faults and system CPU seconds per step, and the process's peak
resident memory; with --vs-torch the same for the PyTorch twin in its own subprocesses.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

import common  # Also puts the repository root on sys.path.

from r2n2_jax import cpu_flags  # noqa: E402
from r2n2_jax import process_setup  # noqa: E402

SETTINGS = {"glibc default": "glibc.malloc.hugetlb=0", "huge pages": cpu_flags.MALLOC_TUNABLE}


def measure(framework, config_path, batch_size, views, steps):
  """{seconds, faults, system_s (per step, medians), peak_rss_gb} of `steps` train steps."""
  import train_step  # pylint: disable=import-outside-toplevel
  config = common.load_config(config_path)
  make = train_step.jax_step_fn if framework == "jax" else train_step.torch_step_fn
  step, _ = make(config, batch_size, views)
  common.timed(step)  # The warm-up above may still be running (JAX dispatches asynchronously).
  rows = []
  for _ in range(steps):
    before = resource.getrusage(resource.RUSAGE_SELF)
    seconds = common.timed(step)
    after = resource.getrusage(resource.RUSAGE_SELF)
    rows.append((seconds, after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime))
  seconds, faults, system_s = (statistics.median(column) for column in zip(*rows))
  return {"seconds": seconds, "faults": faults, "system_s": system_s,
          "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/simple_gru_k3.py")
  parser.add_argument("--batch_size", type=int, default=4)
  parser.add_argument("--views", type=int, default=5)
  parser.add_argument("--steps", type=int, default=4, help="timed steps per run (median)")
  parser.add_argument("--vs-torch", action="store_true")
  parser.add_argument("--child", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(measure(args.child, args.config, args.batch_size, args.views, args.steps)))
    return
  name = os.path.basename(args.config)[:-3]
  print(f"{name} B={args.batch_size} V={args.views}, {os.cpu_count()} CPU cores, CPU "
        f"convolutions: {common.xla_cpu_convolutions()}")
  print("| framework | malloc | s/step | minor page faults/step | system CPU s/step "
        "| peak RSS GB |")
  print("|---|---|---|---|---|---|")
  for framework in ("jax", "torch") if args.vs_torch else ("jax",):
    for label, tunables in SETTINGS.items():
      env = dict(os.environ, GLIBC_TUNABLES=tunables)
      command = [sys.executable, __file__, "--child", framework, "--config", args.config,
                 "--batch_size", str(args.batch_size), "--views", str(args.views), "--steps",
                 str(args.steps)]
      out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
      r = json.loads(out.stdout.strip().splitlines()[-1])
      print(f"| {framework} | {label} (`{tunables}`) | {r['seconds']:.3f} | {r['faults']:,.0f} | "
            f"{r['system_s']:.2f} | {r['peak_rss_gb']:.2f} |", flush=True)


if __name__ == "__main__":
  process_setup.setup("benchmarks/malloc.py")  # Children inherit the XLA:CPU flag.
  main()
