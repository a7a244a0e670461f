"""Process set-up of the command-line entry points, in one call: `setup(program)`.

Library imports change nothing in the process (as in flax's examples and big_vision); the entry
points (launch.py, r2n2_jax.evaluate/.predict/.sweep, benchmarks) call `setup` first, before JAX
starts its backends, and it logs what it chose in one line:
- glibc malloc on transparent huge pages (re-runs the process once; cpu_flags explains why),
- XLA:CPU convolutions on Eigen rather than YNNPACK (cpu_flags; 1.1-3.5x faster convolutions),
- headless OpenGL through EGL for pyrender (no display on clusters).
Your own settings of GLIBC_TUNABLES, XLA_FLAGS' YNN flag and PYOPENGL_PLATFORM are kept.
In a notebook, call `setup("notebook")` (or `cpu_flags.prefer_eigen_convolutions()`) before JAX
is first used to get the same CPU speed.
"""

import os

from absl import logging

from r2n2_jax import cpu_flags


def headless_rendering():
  """pyrender renders offscreen through EGL unless PYOPENGL_PLATFORM says otherwise.

  Must run before pyrender (PyOpenGL) is first imported; `visualize` calls it before its lazy
  pyrender import, so a library user rendering a picture needs no display either.
  """
  os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def setup(program):
  """Process set-up of an entry point; returns the one-line summary it logged.

  May replace the process by itself once (huge-page malloc is read by glibc only at start), so
  call it first thing in `main`, before anything uses JAX.
  """
  cpu_flags.reexec_with_huge_page_malloc()
  eigen = cpu_flags.prefer_eigen_convolutions()
  headless_rendering()
  ynn = [f for f in os.environ.get("XLA_FLAGS", "").split() if f.startswith(cpu_flags.YNN_FLAG)]
  summary = (f"{program}: process set-up: GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '-')}, "
             f"XLA:CPU {ynn[0] if ynn else 'default convolutions'}"
             f"{'' if eigen else ' (yours or unmeasured jaxlib)'}, "
             f"PYOPENGL_PLATFORM={os.environ['PYOPENGL_PLATFORM']}")
  logging.info(summary)
  return summary
