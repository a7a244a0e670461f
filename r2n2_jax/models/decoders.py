"""3D deconvolutional decoders: hidden state (B, 4, 4, 4, 128) -> logits (B, 32, 32, 32, 2).

Every "unpool -> conv" pair is computed on the coarse grid (`Conv3D(unpool=True)`, 1/8 of the
FLOPs, the same result as `Conv(unpool_3d(x))`); the parameter tree is that of the plain form.
"""

import flax.linen as nn

from r2n2_jax.models.layers import Conv3D, leaky_relu, unpool_3d

DECODER_FILTERS = (128, 128, 64, 32, 2)


class SimpleDecoder(nn.Module):
  """unpool -> conv3 128 -> unpool -> conv3 128 -> unpool -> conv3 64 -> conv3 32 -> conv3 2."""
  filters: tuple = DECODER_FILTERS
  conv3d_impl: str = "auto"

  @nn.compact
  def __call__(self, h):
    f = self.filters
    conv = lambda c, name, **kw: Conv3D(c, impl=self.conv3d_impl, name=name, **kw)
    x = h
    for i in range(3):
      x = leaky_relu(conv(f[i], f"conv{i + 1}", unpool=True)(x))
    x = leaky_relu(conv(f[3], "conv4")(x))
    return conv(f[4], "conv5")(x)


class ResidualDecoder(nn.Module):
  """Residual stages at 8^3, 16^3 (identity shortcut) and 32^3 (1x1x1 shortcut), then a residual head."""
  filters: tuple = DECODER_FILTERS
  conv3d_impl: str = "auto"

  @nn.compact
  def __call__(self, h):
    f = self.filters
    conv = lambda c, name, **kw: Conv3D(c, impl=self.conv3d_impl, name=name, **kw)
    x = h
    for stage, c in enumerate((f[0], f[1], f[2])):
      y = leaky_relu(conv(c, f"conv{stage + 1}a", unpool=True)(x))
      y = leaky_relu(conv(c, f"conv{stage + 1}b")(y))
      # The shortcut of the unpooled input: zero insertion itself, or its 1x1x1 conv, which is
      # the zero insertion of the coarse 1x1x1 conv plus the bias everywhere.
      if x.shape[-1] == c:
        shortcut = unpool_3d(x)
      else:
        shortcut = conv(c, f"conv{stage + 1}c", kernel_size=1, unpool=True)(x)
      x = y + shortcut
    a = leaky_relu(conv(f[3], "conv4a")(x))
    b = leaky_relu(conv(f[3], "conv4b")(a))
    x = b + conv(f[3], "conv4c")(a)
    return conv(f[4], "conv5")(x)


DECODERS = {"simple": SimpleDecoder, "residual": ResidualDecoder}
