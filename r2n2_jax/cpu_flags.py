"""XLA:CPU settings measured to be faster for this model, applied when r2n2_jax is imported.

jaxlib 0.10's XLA:CPU runs float32 2D convolutions through YNNPACK by default. For this model's
convolutions Eigen's are 1.1-3.9x faster counting forward, input and kernel gradient
(`python benchmarks/cpu_convs.py`), so YNNPACK keeps the dots and reductions, where it is the
faster one, and the convolutions go to Eigen: B4/V5 train step simple_gru_k3 3.15 -> 1.73 s,
residual_gru_k3 11.31 -> 4.79 s (benchmarks/RESULTS.md). Only the float summation order changes.
"""

import os
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
