"""Shared helpers of the benchmarks: config loading, batches, timing, machine matmul FLOP/s."""

import importlib.util
import os
import re
import statistics
import sys
import time

# Scripts here import this module first. This folder holds data_prep.py, which would shadow the
# data_prep package: search it last; and the repository root (configs/ is not installed) first.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [os.path.dirname(_HERE)] + [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.append(_HERE)

import jax
import jax.numpy as jnp
import numpy as np

VARIANTS = tuple(f"{e}_{c}_k{k}" for e in ("simple", "residual") for c in ("gru", "lstm")
                 for k in (3, 1))


def load_config(path):
  """get_config() of a config file such as configs/simple_gru_k3.py."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No config file {path}")
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def jax_batch(batch, views, seed=0):
  """A train batch as the input pipeline delivers it: uint8 views, all-True mask, bool voxels."""
  rng = np.random.default_rng(seed)
  return {"views": rng.integers(0, 256, (batch, views, 127, 127, 3), dtype=np.uint8),
          "view_mask": np.ones((batch, views), bool),
          "voxels": rng.random((batch, 32, 32, 32)) < 0.3}


def xla_cpu_convolutions():
  """Which XLA:CPU library runs the float32 convolutions in this process, from XLA_FLAGS."""
  from r2n2_jax import cpu_flags  # pylint: disable=import-outside-toplevel
  match = re.search(re.escape(cpu_flags.YNN_FLAG) + r"=(\S*)", os.environ.get("XLA_FLAGS", ""))
  if match is None:
    return "jaxlib default (YNNPACK on jaxlib 0.10)"
  return "YNNPACK" if "individual_convolution" in match.group(1) else "Eigen"


def timed(fn):
  """Seconds of one blocking call of fn()."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def interleaved_medians(fns, repeats):
  """Runs the callables of `fns` (name -> fn) in turn `repeats` times; median seconds per name.

  Alternating them gives each the same share of a shared machine's noise, so ratios are fair.
  """
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      times[name].append(timed(fn))
  return {name: statistics.median(t) for name, t in times.items()}


def matmul_flops_per_s(n=2048, repeats=5):
  """Dense float32 matmul FLOP/s of this machine under XLA (the roofline's compute ceiling)."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  return 2 * n ** 3 / min(timed(lambda: f(a)) for _ in range(repeats))


def compiled_flops(compiled):
  """FLOPs counted by XLA for a compiled computation (None if the backend does not say)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return (cost or {}).get("flops")
