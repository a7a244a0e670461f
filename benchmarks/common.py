"""Shared helpers of the benchmarks: config loading, batches, timing, machine matmul FLOP/s."""

import multiprocessing
import os
import re
import statistics
import sys
import time
import traceback

# Scripts here import this module first: it puts the repository root on the path (configs/ is
# not an installed package).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

import jax
import jax.numpy as jnp
import numpy as np

from configs import VARIANTS  # noqa: E402,F401  (the paper's 8 variants)
from r2n2_jax import config_lib  # noqa: E402


def load_config(path):
  """get_config() of a config file such as configs/simple_gru_k3.py (through config_lib)."""
  return config_lib.load(path)[1]


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


def malloc_setting():
  """How glibc malloc runs in this process (r2n2_jax.cpu_flags: huge pages unless the user chose)."""
  tunables = os.environ.get("GLIBC_TUNABLES")
  return f"GLIBC_TUNABLES={tunables}" if tunables else "glibc default (no GLIBC_TUNABLES)"


def _serve(conn, factory, args):
  try:
    fn, info = factory(*args)
  except Exception:  # pylint: disable=broad-except
    conn.send(RuntimeError(f"{factory.__name__} failed in the child process:\n"
                           f"{traceback.format_exc()}"))
    return
  conn.send(info)
  while conn.recv():
    fn()
    conn.send(None)


class InSubprocess:
  """`factory(*args)` -> (fn, info) built in a child process; calling this runs fn() there once.

  The other framework of a side-by-side comparison runs here, so that each has its own process
  (allocator, thread pools) as a user's run would; the child inherits this process's environment.
  `info` is the factory's second result; a factory that raises raises here, with its traceback.
  """

  def __init__(self, factory, *args):
    context = multiprocessing.get_context("spawn")
    self._conn, child_conn = context.Pipe()
    self._process = context.Process(target=_serve, args=(child_conn, factory, args), daemon=True)
    self._process.start()
    self.info = self._conn.recv()
    if isinstance(self.info, RuntimeError):
      raise self.info

  def __call__(self):
    self._conn.send(True)
    return self._conn.recv()

  def close(self):
    self._conn.send(False)
    self._process.join()


def timed(fn):
  """Seconds of one blocking call of fn()."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def block_medians(fns, repeats):
  """Runs each callable of `fns` (name -> fn) in its own block: one untimed call, then `repeats`
  timed ones; median seconds per name.

  Blocks, not call-by-call alternation: with huge-page malloc, the first call of one framework
  after the other's ran is slower (simple_gru_k3 B4/V5 JAX step 1.5 -> 2.0-2.1 s, the extra
  almost all system time), which alternation would put in every call.
  """
  times = {}
  for name, fn in fns.items():
    timed(fn)
    times[name] = statistics.median(timed(fn) for _ in range(repeats))
  return times


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
