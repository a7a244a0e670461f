"""Input pipeline throughput vs what the train step consumes, measured side by side in one run.

  python benchmarks/input_pipeline.py [--config configs/simple_gru_k3.py] [--batch_size 4]
      [--max_views 5] [--batches 30] [--data_dir /tmp/r2n2_bench_data] [--dataset DIR]
      [--data_workers 0]

Delivered views/s: real views (mask True) of the grain pipeline's batches per second of
iterating it (decode, crop, composite, pad, batch). Consumed views/s: real views per second of
the jitted train step at max_views views per example, run in this process right after. The ratio is
the pipeline's headroom; the procedural dataset (40 objects x 24 views) is built on first use
unless --dataset names one.
"""

import argparse
import os
import time

import jax

import common  # Also puts the repository root on sys.path.

from r2n2_jax import input_pipeline  # noqa: E402
from r2n2_jax import train  # noqa: E402
from r2n2_jax import train_state  # noqa: E402


def pipeline_views_per_s(config, data_dir, num_batches):
  it = input_pipeline.create_train_iterator(config, data_dir)
  next(it)  # Start-up (opening files, threads) is not throughput.
  start, views = time.perf_counter(), 0
  for _ in range(num_batches):
    views += int(next(it)["view_mask"].sum())
  return views / (time.perf_counter() - start)


def step_views_per_s(config, batch_size, views, num_steps):
  """Views/s of the jitted train step at `views` views per example (its highest views/s)."""
  state = train_state.create_train_state(config, jax.random.key(0))
  step = jax.jit(train.train_step, donate_argnums=(0,))
  batch = jax.device_put(common.jax_batch(batch_size, views))
  state, _ = step(state, batch)  # Compile and warm up.
  start = time.perf_counter()
  for _ in range(num_steps):
    state, m = step(state, batch)
  jax.block_until_ready(m)
  return num_steps * batch_size * views / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/simple_gru_k3.py")
  parser.add_argument("--batch_size", type=int, default=4)
  parser.add_argument("--max_views", type=int, default=5)
  parser.add_argument("--batches", type=int, default=30, help="pipeline batches timed")
  parser.add_argument("--steps", type=int, default=3, help="train steps timed")
  parser.add_argument("--data_dir", default="/tmp/r2n2_bench_data")
  parser.add_argument("--dataset", default="procedural")
  parser.add_argument("--data_workers", type=int, default=0)
  args = parser.parse_args()

  config = common.load_config(args.config)
  config.batch_size = args.batch_size
  config.max_views = args.max_views
  config.per_example_views = False
  config.dataset, config.data_dir = args.dataset, args.data_dir
  config.procedural.num_objects, config.procedural.views = 40, 24
  config.data_workers = args.data_workers
  data_dir = input_pipeline.dataset_dir(config)

  delivered = pipeline_views_per_s(config, data_dir, args.batches)
  # The step's views/s grows with the view count (the decoder is paid once per example), so it is
  # timed at max_views: the most the pipeline ever has to deliver.
  consumed = step_views_per_s(config, args.batch_size, args.max_views, args.steps)
  print(f"backend {jax.default_backend()}, {os.cpu_count()} CPU cores, B={args.batch_size}, "
        f"max_views={args.max_views}, data_workers={args.data_workers}")
  print(f"pipeline delivers {delivered:.1f} views/s; the train step consumes {consumed:.2f} "
        f"views/s at {args.max_views} views; headroom {delivered / consumed:.1f}x")


if __name__ == "__main__":
  main()
