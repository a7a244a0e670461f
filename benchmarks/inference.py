"""Inference latency (batch 1, after warm-up): JAX model vs the PyTorch twin, side by side.

  python benchmarks/inference.py [--config configs/simple_gru_k3.py] [--views 1,5] [--repeats 20]
      [--vs-torch]

Prints per view count the median latency of one forward pass (views -> occupancy probabilities)
and, with --vs-torch, PyTorch's (torch.inference_mode, oneDNN; in a child process with the same
environment, right after the JAX calls) and the speed-up.
"""

import argparse
import os

import jax
import numpy as np

import common  # Also puts the repository root on sys.path.

from r2n2_jax import process_setup  # noqa: E402
from r2n2_jax import metrics  # noqa: E402
from r2n2_jax.models import build_model  # noqa: E402


def jax_predict_fn(config, views):
  """A zero-argument callable: one jitted forward pass on (1, views, 127, 127, 3)."""
  model = build_model(config.model)
  x = jax.device_put(np.random.default_rng(0).random((1, views, 127, 127, 3), np.float32))
  mask = jax.device_put(np.ones((1, views), bool))
  variables = jax.jit(model.init)(jax.random.key(0), x, mask)
  forward = jax.jit(lambda v, x, m: metrics.occupancy_probability(model.apply(v, x, m)))
  forward(variables, x, mask).block_until_ready()  # Compile and warm up.
  return lambda: forward(variables, x, mask)


def torch_predict_fn(config, views):
  import torch  # pylint: disable=import-outside-toplevel
  import torch_reference as tr  # pylint: disable=import-outside-toplevel
  model = tr.build(config.model).eval()
  x = torch.rand((1, views, 3, 127, 127))
  mask = torch.ones((1, views), dtype=torch.bool)

  def run():
    with torch.inference_mode():
      return torch.softmax(model(x, mask), dim=1)[:, 1].numpy()

  run()  # Warm-up.
  return run, tr.num_params(model)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/simple_gru_k3.py")
  parser.add_argument("--views", default="1,5", help="comma-separated view counts")
  parser.add_argument("--repeats", type=int, default=20, help="timed calls per case (median)")
  parser.add_argument("--vs-torch", action="store_true")
  args = parser.parse_args()

  config = common.load_config(args.config)
  name = os.path.basename(args.config)[:-3]
  print(f"backend {jax.default_backend()}, {os.cpu_count()} CPU cores, CPU convolutions: "
        f"{common.xla_cpu_convolutions()}, malloc: {common.malloc_setting()}")
  for views in (int(v) for v in args.views.split(",")):
    fns = {"jax": jax_predict_fn(config, views)}
    if args.vs_torch:
      fns["torch"] = common.InSubprocess(torch_predict_fn, config, views)
    t = common.block_medians(fns, args.repeats)
    if args.vs_torch:
      fns["torch"].close()
    line = f"{name} B=1 V={views}: jax {t['jax'] * 1e3:.1f} ms"
    if args.vs_torch:
      line += f"; torch {t['torch'] * 1e3:.1f} ms, jax speed-up {t['torch'] / t['jax']:.2f}x"
    print(line, flush=True)


if __name__ == "__main__":
  process_setup.setup("benchmarks/inference.py")  # As the entry points run (launch.py).
  main()
