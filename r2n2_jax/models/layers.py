"""Building blocks shared by the encoders, the recurrent cells and the decoders.

Initialisation follows the original 3D-R2N2: weights N(0, sqrt(2 / n)) with
n = (fan_in + fan_out) / 2, biases 0.1.
"""

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp

LEAKY_SLOPE = 0.01
BIAS_INIT = 0.1
CONV3D_IMPLS = ("auto", "xla", "depth2d")

# Var = 2 / ((fan_in + fan_out) / 2): variance scaling with scale 2 over the mean fan.
weight_init = jax.nn.initializers.variance_scaling(2.0, "fan_avg", "normal")
bias_init = jax.nn.initializers.constant(BIAS_INIT)


def leaky_relu(x):
  return nn.leaky_relu(x, negative_slope=LEAKY_SLOPE)


def _conv2d(x, kernel, padding="SAME"):
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Conv(nn.Module):
  """'SAME' 2D conv with bias; parameters and init those of `nn.Conv(features, kernel_size)`."""
  features: int
  kernel_size: tuple

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", weight_init, tuple(self.kernel_size) + (x.shape[-1],
                                                                          self.features))
    bias = self.param("bias", bias_init, (self.features,))
    return _conv2d(x, kernel.astype(x.dtype)) + bias.astype(x.dtype)


Dense = functools.partial(nn.Dense, kernel_init=weight_init, bias_init=bias_init)


def _max_pool_2x2_pad1(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding=((1, 1), (1, 1)))


@jax.custom_vjp
def max_pool_2x2_pad1(x):
  """2x2 stride-2 max-pool with 1 pixel of padding per side: (B, H, W, C) -> (B, H//2+1, ...).

  Exactly `nn.max_pool` forward and backward (a tie sends the gradient to the window's first
  maximum in row-major order, as XLA and PyTorch do); the backward is elementwise instead of
  XLA:CPU's select-and-scatter, which is 4-12x slower (benchmarks/RESULTS.md).
  """
  return _max_pool_2x2_pad1(x)


def _windows(x):
  """The four taps of every pooling window: (B, H, W, C) -> 4 x (B, H//2+1, W//2+1, C)."""
  h, w = x.shape[1:3]
  oh, ow = h // 2 + 1, w // 2 + 1
  padded = jnp.pad(x, ((0, 0), (1, 2 * oh - h - 1), (1, 2 * ow - w - 1), (0, 0)),
                   constant_values=-jnp.inf)
  return [padded[:, dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)]


def _max_pool_fwd(x):
  y = _max_pool_2x2_pad1(x)
  return y, (x, y)


def _max_pool_bwd(residuals, dy):
  x, y = residuals
  b, h, w, c = x.shape
  taken = jnp.zeros(y.shape, bool)
  grads = []
  for tap in _windows(x):
    chosen = (tap == y) & ~taken
    taken = taken | chosen
    grads.append(jnp.where(chosen, dy, 0))
  # (B, oh, 2, ow, 2, C) in window order -> the padded grid -> drop the padding.
  grid = jnp.stack(grads, axis=-2).reshape(y.shape[:3] + (2, 2, c))
  grid = grid.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * y.shape[1], 2 * y.shape[2], c)
  return (grid[:, 1:1 + h, 1:1 + w],)


max_pool_2x2_pad1.defvjp(_max_pool_fwd, _max_pool_bwd)


def unpool_3d(x):
  """2x2x2 zero-insertion unpooling, (B, D, H, W, C) -> (B, 2D, 2H, 2W, C).

  Each input value lands on the first corner of its 2x2x2 block, the rest are zeros. Every
  "unpool -> conv" of the decoders runs as `Conv3D(unpool=True)` on the coarse grid instead, which
  never builds this grid; the residual decoder's identity shortcuts (8^3 and 16^3 stages) do build
  it, since they add the zero-inserted input itself.
  """
  zero = jnp.zeros((), x.dtype)
  return jax.lax.pad(x, zero, [(0, 0, 0)] + [(0, 1, 1)] * 3 + [(0, 0, 0)])


def _xla_conv3d(x, kernel, padding):
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1, 1), padding, dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


def _depth2d_conv3d(x, kernel, padding):
  """The 3D conv as one 2D conv over all (batch x padded depth) slices, depth taps as channels.

  The kernel's depth taps are stacked into the output channels of a 2D conv run on every padded
  depth slice, and each tap's output is read back at its depth offset and summed: one wide conv
  whose input is the padded tensor itself (no per-tap slices), at the cost of the padding slices'
  FLOPs (+6% on the 32^3 grid). Faster on CPU than the 3D conv, and than one 2D conv per tap
  (benchmarks/RESULTS.md).
  """
  b, d = x.shape[:2]
  kd, o = kernel.shape[0], kernel.shape[-1]
  lo, hi = padding[0]
  dp = d + lo + hi
  d_out = dp - kd + 1
  xp = jnp.pad(x, [(0, 0), (lo, hi), (0, 0), (0, 0), (0, 0)]).reshape((b * dp,) + x.shape[2:])
  taps_as_channels = kernel.transpose(1, 2, 3, 0, 4).reshape(kernel.shape[1:4] + (kd * o,))
  y = _conv2d(xp, taps_as_channels, padding[1:])
  y = y.reshape((b, dp) + y.shape[1:3] + (kd, o))
  return sum(y[:, k:k + d_out, :, :, k] for k in range(kd))


def resolve_conv3d_impl(impl):
  """"auto" -> "depth2d" on CPU (XLA:CPU's 2D convs are faster than its 3D ones), else "xla"."""
  if impl not in CONV3D_IMPLS:
    raise ValueError(f"conv3d_impl must be one of {CONV3D_IMPLS}, got {impl!r}")
  if impl == "auto":
    return "depth2d" if jax.default_backend() == "cpu" else "xla"
  return impl


def conv3d(x, kernel, padding, impl="auto"):
  """Stride-1 3D cross-correlation, no bias: x (B, D, H, W, Cin), kernel (kd, kh, kw, Cin, Cout).

  `padding` is ((lo, hi),) * 3; `impl` is "xla" (lax 3D conv), "depth2d" (depth taps of 2D convs)
  or "auto". All give the same result up to float summation order.
  """
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  if resolve_conv3d_impl(impl) == "depth2d":
    return _depth2d_conv3d(x, kernel, padding)
  return _xla_conv3d(x, kernel, padding)


def unpool_conv3d(x, kernel, impl="auto"):
  """Exactly conv3d(unpool_3d(x), kernel, 'SAME') computed on the coarse grid with 1/8 the FLOPs.

  x (B, N, N, N, Cin), kernel (k, k, k, Cin, Cout) with k in {1, 3} -> (B, 2N, 2N, 2N, Cout).
  Per axis, fine output 2i sees only u[2i] = x[i] (tap 1) and fine output 2i + 1 sees u[2i] = x[i]
  (tap 0) and u[2i + 2] = x[i + 1] (tap 2); so each of the 8 output parities is a conv of the
  coarse grid with a 1- or 2-tap slice of the kernel per axis, and they are then interleaved.
  A 1x1x1 kernel only sees the inserted zeros at odd outputs: it is the unpooled coarse conv.
  """
  if kernel.shape[:3] == (1, 1, 1):
    return unpool_3d(conv3d(x, kernel, ((0, 0),) * 3, impl))
  if kernel.shape[:3] != (3, 3, 3):
    raise ValueError(f"unpool_conv3d supports 1x1x1 and 3x3x3 kernels, got {kernel.shape}")
  taps = (slice(1, 2), slice(0, 3, 2))  # Kernel taps seen by even / odd fine outputs.
  pads = ((0, 0), (0, 1))  # Coarse padding: odd outputs also read x[i + 1] (zero past the end).
  b, n = x.shape[0], x.shape[1]
  parts = [conv3d(x, kernel[taps[pd], taps[ph], taps[pw]], (pads[pd], pads[ph], pads[pw]), impl)
           for pd, ph, pw in itertools.product((0, 1), repeat=3)]
  y = jnp.stack(parts, axis=4).reshape((b, n, n, n, 2, 2, 2, kernel.shape[-1]))
  return y.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape((b, 2 * n, 2 * n, 2 * n, -1))


class Conv3D(nn.Module):
  """A 'SAME' 3D conv with bias, optionally of the zero-unpooled input: (B, D, H, W, Cin) -> ...

  Its parameters ("kernel" (k, k, k, Cin, Cout), "bias" (Cout,)) and their initial values are those
  of `Conv(features, (k, k, k))`, so checkpoints do not depend on `impl` or `unpool`.
  With unpool=True it returns conv(unpool_3d(x)) + bias at (B, 2D, 2H, 2W, Cout) via
  `unpool_conv3d`.
  """
  features: int
  kernel_size: int = 3
  unpool: bool = False
  impl: str = "auto"

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", weight_init, (k, k, k, x.shape[-1], self.features))
    bias = self.param("bias", bias_init, (self.features,))
    kernel = kernel.astype(x.dtype)
    if self.unpool:
      y = unpool_conv3d(x, kernel, self.impl)
    else:
      y = conv3d(x, kernel, (((k - 1) // 2, k // 2),) * 3, self.impl)
    return y + bias.astype(x.dtype)
