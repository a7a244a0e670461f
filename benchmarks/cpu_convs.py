"""This model's 2D convolutions under XLA:CPU's YNNPACK (jaxlib's default) and Eigen (ours).

  python benchmarks/cpu_convs.py [--repeats 3]

`r2n2_jax.cpu_flags` sends float32 convolutions to Eigen instead of YNNPACK. The backend reads
XLA_FLAGS once per process, so each setting runs in its own subprocess (one after the other, on
the same machine) and the table prints milliseconds per call (min of --repeats) for the forward
pass, the input gradient and the kernel gradient (XLA's own), with the speed-up. Shapes: the
encoders' at B x V = 20 (4 x 5), and the decoders' 32^3 / 16^3 convs as `layers.conv3d` runs
them (depth slices as the batch, depth taps as output channels).
"""

import argparse
import json
import os
import subprocess
import sys

import common  # Also puts the repository root on sys.path.

from r2n2_jax import cpu_flags  # noqa: E402
from r2n2_jax import process_setup  # noqa: E402

SETTINGS = {"YNNPACK (jaxlib default)": "individual_dot,individual_convolution,reduce",
            "Eigen (r2n2_jax)": cpu_flags.YNN_FUSION_TYPES}
# (name, input (N, H, W, Cin), kernel (k, k, Cin, Cout)).
SHAPES = (("conv1 7x7 127^2 3->96", (20, 127, 127, 3), (7, 7, 3, 96)),
          ("conv1b 127^2 96->96 (residual)", (20, 127, 127, 96), (3, 3, 96, 96)),
          ("conv2 64^2 96->128", (20, 64, 64, 96), (3, 3, 96, 128)),
          ("conv2b 64^2 128->128 (residual)", (20, 64, 64, 128), (3, 3, 128, 128)),
          ("conv3 33^2 128->256", (20, 33, 33, 128), (3, 3, 128, 256)),
          ("conv4 17^2 256->256", (20, 17, 17, 256), (3, 3, 256, 256)),
          ("32^3 64->32, taps as channels", (136, 32, 32, 64), (3, 3, 64, 96)),
          ("32^3 64->64, taps as channels", (136, 32, 32, 64), (3, 3, 64, 192)),
          ("32^3 32->2, taps as channels", (136, 32, 32, 32), (3, 3, 32, 6)),
          ("16^3 128->64 sub-pixel part", (68, 16, 16, 128), (2, 2, 128, 128)))
IMAGE_INPUT = ("conv1 7x7 127^2 3->96",)  # Its speed-up leaves out the input gradient (unused).


def measure(repeats):
  """{shape name: [forward, input grad, kernel grad] ms} in this process's XLA setting."""
  import jax  # pylint: disable=import-outside-toplevel

  def conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  results = {}
  for name, x_shape, k_shape in SHAPES:
    x = jax.random.normal(jax.random.key(0), x_shape)
    k = 0.05 * jax.random.normal(jax.random.key(1), k_shape)
    dy = jax.random.normal(jax.random.key(2), x_shape[:3] + k_shape[-1:])
    fns = (jax.jit(conv),
           jax.jit(lambda x, k, dy: jax.vjp(lambda a: conv(a, k), x)[1](dy)[0]),
           jax.jit(lambda x, k, dy: jax.vjp(lambda w: conv(x, w), k)[1](dy)[0]))
    args = ((x, k), (x, k, dy), (x, k, dy))
    row = []
    for fn, a in zip(fns, args):
      jax.block_until_ready(fn(*a))
      row.append(1e3 * min(common.timed(lambda: fn(*a)) for _ in range(repeats)))
    results[name] = row
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--child", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(measure(args.repeats)))
    return
  print(f"malloc: {common.malloc_setting()}")
  runs = {}
  for label, types in SETTINGS.items():
    env = dict(os.environ, XLA_FLAGS=f"{cpu_flags.YNN_FLAG}={types}", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, __file__, "--child", "1", "--repeats",
                          str(args.repeats)], env=env, check=True, capture_output=True, text=True)
    runs[label] = json.loads(out.stdout.strip().splitlines()[-1])
  ynn, eigen = runs.values()
  print("| conv | YNNPACK fwd / input grad / kernel grad ms | Eigen fwd / input grad / kernel grad"
        " ms | speed-up (sum) |")
  print("|---|---|---|---|")
  for name, _, _ in SHAPES:
    a, b = ynn[name], eigen[name]
    used = [0, 2] if name in IMAGE_INPUT else [0, 1, 2]  # The image needs no gradient.
    print(f"| {name} | {' / '.join(f'{t:.0f}' for t in a)} | {' / '.join(f'{t:.0f}' for t in b)}"
          f" | {sum(a[i] for i in used) / sum(b[i] for i in used):.2f}x |")


if __name__ == "__main__":
  process_setup.setup("benchmarks/cpu_convs.py")  # As the entry points run (launch.py).
  main()
