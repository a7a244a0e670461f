"""Process settings measured to make this model faster on CPU.

XLA:CPU convolutions (applied when r2n2_jax is imported): jaxlib 0.10's XLA:CPU runs float32 2D
convolutions through YNNPACK by default. For this model's convolutions Eigen's are 1.1-3.5x
faster counting forward, input and kernel gradient (`python benchmarks/cpu_convs.py`), so YNNPACK
keeps the dots and reductions, where it is the faster one, and the convolutions go to Eigen:
B4/V5 train step simple_gru_k3 3.15 -> 1.73 s, residual_gru_k3 11.31 -> 4.79 s
(benchmarks/RESULTS.md). Only the float summation order changes.

glibc malloc on transparent huge pages (applied by the command-line entry points, which re-run
themselves with it): glibc serves XLA's large buffers with fresh mmap()s and unmaps them when freed,
so every train step page-faults its temporaries in again, 4 KiB at a time (1.9 GB and ~0.8 s of
system time per residual B4/V5 step). `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` makes malloc ask for
transparent huge pages for them: 2 MiB per fault, and the step gets faster (benchmarks/RESULTS.md)
at the same peak memory. glibc reads the tunable only at process start.
"""

import os
import platform
import sys
import warnings

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_FUSION_TYPES = "individual_dot,reduce"  # jaxlib 0.10's default also has individual_convolution.
MEASURED_JAXLIB = ("0.10.",)  # XLA aborts on unknown flags: only set it where it was measured.


def _jax_backend_started():
  try:
    from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):  # A private API: if it moves, skip the warning.
    return False


def prefer_eigen_convolutions(environ=os.environ):
  """Adds the YNNPACK fusion types above to XLA_FLAGS unless the user set them; returns whether.

  XLA reads the flags when JAX creates its backends: if that already happened (jax used before
  r2n2_jax was imported), warns that the setting comes too late for this process.
  """
  import jaxlib.version  # pylint: disable=import-outside-toplevel
  flags = environ.get("XLA_FLAGS", "")
  if YNN_FLAG in flags or not jaxlib.version.__version__.startswith(MEASURED_JAXLIB):
    return False
  environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}={YNN_FUSION_TYPES}".strip()
  if environ is os.environ and _jax_backend_started():
    warnings.warn(f"JAX was initialised before r2n2_jax was imported, so XLA_FLAGS gets "
                  f"{YNN_FLAG}={YNN_FUSION_TYPES} too late: CPU convolutions stay on YNNPACK "
                  f"(about 2x slower training). Import r2n2_jax first, or set the flag yourself.")
  return True


MALLOC_TUNABLE = "glibc.malloc.hugetlb=1"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def _transparent_huge_pages():
  """Whether the kernel hands out transparent huge pages to regions that ask (madvise / always)."""
  try:
    with open(THP_SETTING, encoding="utf-8") as f:
      setting = f.read()
  except OSError:
    return False
  return "[madvise]" in setting or "[always]" in setting


def huge_page_malloc_environ(environ=os.environ, libc=None, huge_pages=None):
  """The environment to re-run this process with for huge-page malloc, or None when not needed.

  None when the user set GLIBC_TUNABLES (theirs wins; `glibc.malloc.hugetlb=0` opts out), when
  the C library is not glibc >= 2.35 (the tunable's first release), or when the kernel has no
  transparent huge pages to give. `libc` ((name, version)) and `huge_pages` default to this machine.
  """
  if "GLIBC_TUNABLES" in environ or sys.platform != "linux":
    return None
  name, version = platform.libc_ver() if libc is None else libc
  if name != "glibc" or tuple(int(v) for v in version.split(".")[:2]) < (2, 35):
    return None
  if not (_transparent_huge_pages() if huge_pages is None else huge_pages):
    return None
  return dict(environ, GLIBC_TUNABLES=MALLOC_TUNABLE)


def reexec_with_huge_page_malloc():
  """Replaces this process by itself (same interpreter and arguments) with huge-page malloc.

  For command-line entry points only, called before they do any work; returns when there is
  nothing to change (see `huge_page_malloc_environ`).
  """
  environ = huge_page_malloc_environ()
  if environ is not None:
    os.execve(sys.executable, sys.orig_argv, environ)
