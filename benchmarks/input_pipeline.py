"""Training input pipeline: delivered real views per CPU-second, fast form vs plain form.

  python benchmarks/input_pipeline.py [--batch_size 64] [--max_views 20] [--batches 20]
      [--workers 0,1,2] [--forms fast,plain] [--step_s 0.075] [--dataset DIR] [--objects 3000]

For each form and grain worker count, the pipeline alone delivers --batches training batches
(after 2 untimed ones: start-up, worker spawn) and this prints real views (view_mask True) per
second of wall time and per CPU-second of the whole pipeline: this process (all its threads) plus
every descendant process (grain workers, from /proc). The fast form is `create_train_iterator`
(views and voxels inflated with zlib-ng, RGBA crops copied into one batch, the background composite
left to the jitted step); the plain form is `TrainExample` per tfds-decoded record with the float
composite on the host, batched by grain (the pipeline before the fast form). --step_s is the train
step's time to feed (default: the issue's H200 estimate at B64/V20, until a GPU measures it): the
step demands B x mean(n) views per step_s, and the CPU cores that needs are printed. The train split
is the procedural one's 28 records repeated to --objects (`replicated_dataset` says why).
"""

import argparse
import os
import sys
import time

from absl import flags
import grain

import common  # Also puts the repository root on sys.path.

from data_prep import records  # noqa: E402
from r2n2_jax import process_setup  # noqa: E402
from r2n2_jax import input_pipeline  # noqa: E402
from r2n2_jax import train  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def _descendants(pid):
  out = []
  for task in os.listdir(f"/proc/{pid}/task"):
    try:
      with open(f"/proc/{pid}/task/{task}/children") as f:
        children = [int(c) for c in f.read().split()]
    except OSError:
      continue
    for child in children:
      out += [child] + _descendants(child)
  return out


def tree_cpu_seconds():
  """User + system CPU seconds of this process and its live descendants (Linux /proc)."""
  t = os.times()
  total = t.user + t.system
  for pid in _descendants(os.getpid()):
    try:
      with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
      total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime.
    except OSError:
      pass
  return total


def replicated_dataset(source_dir, num_objects, data_dir):
  """A dataset whose train split repeats `source_dir`'s train records up to `num_objects`.

  grain's shuffle walks cycles of a Feistel permutation: 1.2 ms per index on a 28-record split,
  16 us on 3,000 records, 9 us on 30,000; a large split keeps that artefact out of the figures.
  """
  out = os.path.join(data_dir, f"replicated_{num_objects}")
  path = os.path.join(out, "bench_replicated", records.VERSION)
  if os.path.exists(os.path.join(path, "dataset_info.json")):
    return path
  source = records.load_split(source_dir, "train")
  examples = ((str(i), source[i % len(source)]) for i in range(num_objects))
  return records.write_dataset("bench_replicated", {"train": examples}, out)


def plain_train_iterator(config, data_dir):
  """The plain form: per-example TrainExample on tfds-decoded records, host composite."""
  source = records.load_split(data_dir, config.train_split)
  ds = grain.MapDataset.source(source).shuffle(seed=config.seed).repeat()
  ds = ds.map_with_index(input_pipeline.TrainExample(config, config.batch_size))
  ds = ds.batch(config.batch_size, drop_remainder=True)
  return iter(input_pipeline._to_iter(  # pylint: disable=protected-access
      config, ds, input_pipeline.num_data_workers(config)))


def measure(iterator, num_batches, warmup=2):
  """(real views, padded views, wall s, CPU s) of `num_batches` batches after `warmup`."""
  for _ in range(warmup):
    next(iterator)
  cpu, start = tree_cpu_seconds(), time.perf_counter()
  real = padded = 0
  for _ in range(num_batches):
    batch = next(iterator)
    real += int(batch["view_mask"].sum())
    padded += batch["view_mask"].size
  cpu = max(tree_cpu_seconds() - cpu, 1 / _TICK)  # CPU times count in clock ticks.
  return real, padded, time.perf_counter() - start, cpu


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/simple_gru_k3.py")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--max_views", type=int, default=20)
  parser.add_argument("--batches", type=int, default=20, help="batches timed per case")
  parser.add_argument("--workers", default="0,1,2", help="comma-separated grain worker counts")
  parser.add_argument("--forms", default="fast,plain")
  parser.add_argument("--step_s", type=float, default=0.075,
                      help="train step time to feed (s; default: H200 estimate at B64/V20)")
  parser.add_argument("--data_dir", default="/tmp/r2n2_bench_data")
  parser.add_argument("--dataset", default="procedural")
  parser.add_argument("--objects", type=int, default=3000,
                      help="train records, repeating the dataset's (0: the dataset as it is)")
  args = parser.parse_args()
  flags.FLAGS(sys.argv[:1])  # grain's worker processes read absl flags (defaults here).

  config = common.load_config(args.config)
  config.batch_size, config.max_views = args.batch_size, args.max_views
  config.dataset, config.data_dir = args.dataset, args.data_dir
  config.procedural.num_objects, config.procedural.views = 40, 24
  data_dir = train.prepare_dataset(config)
  if args.objects:
    data_dir = replicated_dataset(data_dir, args.objects, args.data_dir)
  cores = len(os.sched_getaffinity(0))
  print(f"{cores} CPU cores, B={args.batch_size}, max_views={args.max_views}, view_buckets="
        f"{tuple(config.view_buckets)}, random_flip={config.random_flip}, dataset {data_dir}")
  rates = {}
  for form in args.forms.split(","):
    for workers in (int(w) for w in args.workers.split(",")):
      config.data_workers = workers
      make = input_pipeline.create_train_iterator if form == "fast" else plain_train_iterator
      it = make(config, data_dir)
      real, padded, wall, cpu = measure(it, args.batches)
      del it
      rates[form, workers] = real / cpu
      demand = real / args.batches / args.step_s
      print(f"{form} form, data_workers={workers}: {real / wall:,.0f} real views/s wall, "
            f"{real / cpu:,.0f} per CPU-second ({cpu:.1f} CPU s, {wall:.1f} s), "
            f"{real / padded:.2f} of delivered views real; the step at {args.step_s * 1e3:.0f} "
            f"ms demands {demand:,.0f} views/s: {demand / (real / cpu):.1f} cores of this "
            f"pipeline", flush=True)
  for workers in sorted({w for _, w in rates}):
    if ("fast", workers) in rates and ("plain", workers) in rates:
      print(f"data_workers={workers}: fast / plain views per CPU-second "
            f"{rates['fast', workers] / rates['plain', workers]:.1f}x")


if __name__ == "__main__":
  process_setup.setup("benchmarks/input_pipeline.py")  # As the entry points run (launch.py).
  main()
