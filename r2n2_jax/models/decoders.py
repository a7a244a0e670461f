"""3D deconvolutional decoders: hidden state (B, 4, 4, 4, 128) -> logits (B, 32, 32, 32, 2)."""

import flax.linen as nn

from r2n2_jax.models.layers import Conv, leaky_relu, unpool_3d

DECODER_FILTERS = (128, 128, 64, 32, 2)


class SimpleDecoder(nn.Module):
  """unpool -> conv3 128 -> unpool -> conv3 128 -> unpool -> conv3 64 -> conv3 32 -> conv3 2."""
  filters: tuple = DECODER_FILTERS

  @nn.compact
  def __call__(self, h):
    f = self.filters
    x = h
    for i in range(3):
      x = leaky_relu(Conv(f[i], (3, 3, 3), name=f"conv{i + 1}")(unpool_3d(x)))
    x = leaky_relu(Conv(f[3], (3, 3, 3), name="conv4")(x))
    return Conv(f[4], (3, 3, 3), name="conv5")(x)


class ResidualDecoder(nn.Module):
  """Residual stages at 8^3, 16^3 (identity shortcut) and 32^3 (1x1x1 shortcut), then a residual head."""
  filters: tuple = DECODER_FILTERS

  @nn.compact
  def __call__(self, h):
    f = self.filters
    x = h
    for stage, c in enumerate((f[0], f[1], f[2])):
      u = unpool_3d(x)
      y = leaky_relu(Conv(c, (3, 3, 3), name=f"conv{stage + 1}a")(u))
      y = leaky_relu(Conv(c, (3, 3, 3), name=f"conv{stage + 1}b")(y))
      shortcut = u if u.shape[-1] == c else Conv(c, (1, 1, 1), name=f"conv{stage + 1}c")(u)
      x = y + shortcut
    a = leaky_relu(Conv(f[3], (3, 3, 3), name="conv4a")(x))
    b = leaky_relu(Conv(f[3], (3, 3, 3), name="conv4b")(a))
    x = b + Conv(f[3], (3, 3, 3), name="conv4c")(a)
    return Conv(f[4], (3, 3, 3), name="conv5")(x)


DECODERS = {"simple": SimpleDecoder, "residual": ResidualDecoder}
