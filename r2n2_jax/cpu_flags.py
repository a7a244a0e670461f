"""XLA:CPU settings measured to be faster for this model, applied when r2n2_jax is imported.

jaxlib 0.10's XLA:CPU runs float32 2D convolutions through YNNPACK by default. For this model's
convolutions Eigen's are up to 2.4x faster (127^2 96 -> 96: 553 -> 298 ms forward; 32^3 slices
64 -> 32: 74 -> 29 ms), and with Eigen XLA's own conv kernel gradients beat matmul forms
(benchmarks/RESULTS.md). So YNNPACK keeps the dots and reductions, where it is the faster one,
and the convolutions go to Eigen: B4/V5 train step simple_gru_k3 2.44 -> 2.03 s, residual_gru_k3
7.48 -> 5.66 s. Only the float summation order changes.
"""

import os

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_FUSION_TYPES = "individual_dot,reduce"  # jaxlib 0.10's default also has individual_convolution.
MEASURED_JAXLIB = ("0.10.",)  # XLA aborts on unknown flags: only set it where it was measured.


def prefer_eigen_convolutions(environ=os.environ):
  """Adds the YNNPACK fusion types above to XLA_FLAGS unless the user set them; returns whether.

  Takes effect only if JAX has not yet created its CPU backend (importing r2n2_jax does not).
  """
  import jaxlib.version  # pylint: disable=import-outside-toplevel
  flags = environ.get("XLA_FLAGS", "")
  if YNN_FLAG in flags or not jaxlib.version.__version__.startswith(MEASURED_JAXLIB):
    return False
  environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}={YNN_FUSION_TYPES}".strip()
  return True
