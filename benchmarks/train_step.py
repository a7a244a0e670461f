"""Train-step throughput (forward + backward + Adam) and its roofline; optionally vs PyTorch.

  python benchmarks/train_step.py --config configs/simple_gru_k3.py \
      --batch_size 4 --views 5 [--vs-torch] [--all-variants] [--views 1,5,20] [--steps 5]
      [--dtype bfloat16] [--memory]

Prints per case: median step time, views/s, XLA-counted FLOPs per step (compiled cost_analysis),
achieved FLOP/s and its fraction of this machine's dense matmul FLOP/s (measured in this run).
With --vs-torch the PyTorch twin (benchmarks/torch_reference.py) runs in a child process (same
environment) right after the JAX steps (`common.block_medians`), and the speed-up (torch time /
JAX time) is printed. With --memory each case is only compiled and XLA's buffer plan
(temporaries, arguments) is printed: e.g. whether batch 64 x 20 views fits.
"""

import argparse
import os

import jax

import common  # Also puts the repository root on sys.path.

from r2n2_jax import process_setup  # noqa: E402
from r2n2_jax import train  # noqa: E402
from r2n2_jax import train_state  # noqa: E402


def jax_step_fn(config, batch_size, views):
  """A zero-argument callable running one real train step (state donated, as in the loop)."""
  state = train_state.create_train_state(config, jax.random.key(0))
  batch = jax.device_put(common.jax_batch(batch_size, views))
  step = jax.jit(train.train_step, donate_argnums=(0,))
  compiled = step.lower(state, batch).compile()
  holder = {"state": state}

  def run():
    holder["state"], m = compiled(holder["state"], batch)
    return m["loss"]

  run()  # Warm-up.
  return run, common.compiled_flops(compiled)


def compiled_memory(config, batch_size, views):
  """XLA's buffer plan of the train step, compiled but not run: (temporaries, arguments) bytes."""
  state = jax.eval_shape(lambda: train_state.create_train_state(config, jax.random.key(0)))
  batch = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                       common.jax_batch(batch_size, views))
  compiled = jax.jit(train.train_step, donate_argnums=(0,)).lower(state, batch).compile()
  memory = compiled.memory_analysis()
  return memory.temp_size_in_bytes, memory.argument_size_in_bytes


def torch_step_fn(config, batch_size, views):
  import torch_reference as tr  # pylint: disable=import-outside-toplevel
  model = tr.build(config.model)
  step = tr.make_train_step(model, config.learning_rate, config.weight_decay)
  inputs = tr.random_batch(batch_size, views)
  step(*inputs)  # Warm-up.
  return (lambda: step(*inputs).item()), tr.num_params(model)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/simple_gru_k3.py")
  parser.add_argument("--batch_size", type=int, default=4)
  parser.add_argument("--views", default="5", help="comma-separated view counts, e.g. 1,5,20")
  parser.add_argument("--steps", type=int, default=5, help="timed steps per case (median)")
  parser.add_argument("--vs-torch", action="store_true")
  parser.add_argument("--all-variants", action="store_true")
  parser.add_argument("--dtype", default="float32", help="config.model.dtype of the JAX step")
  parser.add_argument("--memory", action="store_true",
                      help="only compile each case and print XLA's memory plan (no timing)")
  args = parser.parse_args()

  configs_dir = os.path.dirname(os.path.abspath(args.config))
  paths = ([os.path.join(configs_dir, v + ".py") for v in common.VARIANTS] if args.all_variants
           else [args.config])
  peak = common.matmul_flops_per_s()
  print(f"backend {jax.default_backend()}, dense matmul {peak / 1e9:.0f} GFLOP/s, "
        f"CPU convolutions: {common.xla_cpu_convolutions()}, malloc: {common.malloc_setting()}")
  for path in paths:
    config = common.load_config(path)
    config.model.dtype = args.dtype
    name = os.path.basename(path)[:-3] + ("" if args.dtype == "float32" else f" {args.dtype}")
    for views in (int(v) for v in args.views.split(",")):
      if args.memory:
        temp, arguments = compiled_memory(config, args.batch_size, views)
        print(f"{name} B={args.batch_size} V={views}: {temp / 1e9:.1f} GB of temporaries, "
              f"{arguments / 1e9:.1f} GB of arguments (XLA {jax.default_backend()} plan)",
              flush=True)
        continue
      fns = {}
      fns["jax"], flops = jax_step_fn(config, args.batch_size, views)
      if args.vs_torch:
        fns["torch"] = common.InSubprocess(torch_step_fn, config, args.batch_size, views)
      t = common.block_medians(fns, args.steps)
      if args.vs_torch:
        fns["torch"].close()
      line = (f"{name} B={args.batch_size} V={views}: jax {t['jax']:.3f} s/step, "
              f"{args.batch_size * views / t['jax']:.1f} views/s")
      if flops:
        line += (f", {flops / 1e9:.1f} GFLOP/step, {flops / t['jax'] / 1e9:.1f} GFLOP/s "
                 f"= {flops / t['jax'] / peak:.2f} of matmul")
      if args.vs_torch:
        line += (f"; torch {t['torch']:.3f} s/step ({fns['torch'].info:,} params), "
                 f"jax speed-up {t['torch'] / t['jax']:.2f}x")
      print(line, flush=True)


if __name__ == "__main__":
  process_setup.setup("benchmarks/train_step.py")  # As the entry points run (launch.py).
  main()
