"""2D-CNN view encoders: (N, 127, 127, 3) float32 -> (N, 1024) features."""

import flax.linen as nn

from r2n2_jax.models.layers import Conv, Dense, leaky_relu, max_pool_2x2_pad1

ENCODER_FILTERS = (96, 128, 256, 256, 256, 256)
FEATURE_DIM = 1024


class SimpleEncoder(nn.Module):
  """Per stage conv (7x7 first, then 3x3) -> pool -> leaky ReLU; 127 -> 64 -> ... -> 3."""
  filters: tuple = ENCODER_FILTERS
  feature_dim: int = FEATURE_DIM

  @nn.compact
  def __call__(self, images):
    x = images
    for i, f in enumerate(self.filters):
      k = 7 if i == 0 else 3
      x = Conv(f, (k, k), name=f"conv{i + 1}")(x)
      x = leaky_relu(max_pool_2x2_pad1(x))
    x = x.reshape(x.shape[0], -1)
    return leaky_relu(Dense(self.feature_dim, dtype=x.dtype, name="fc")(x))


class ResidualEncoder(nn.Module):
  """The Res3D-GRU encoder: two convs per stage with shortcuts on stages 2, 3, 5 (1x1) and 6."""
  filters: tuple = ENCODER_FILTERS
  feature_dim: int = FEATURE_DIM

  @nn.compact
  def __call__(self, images):
    f = self.filters
    x = leaky_relu(Conv(f[0], (7, 7), name="conv1a")(images))
    x = leaky_relu(Conv(f[0], (3, 3), name="conv1b")(x))
    x = max_pool_2x2_pad1(x)
    for stage in range(2, 7):
      c = f[stage - 1]
      y = leaky_relu(Conv(c, (3, 3), name=f"conv{stage}a")(x))
      y = leaky_relu(Conv(c, (3, 3), name=f"conv{stage}b")(y))
      if stage in (2, 3, 5):
        y = y + Conv(c, (1, 1), name=f"conv{stage}c")(x)
      elif stage == 6:
        y = y + x
      x = max_pool_2x2_pad1(y)
    x = x.reshape(x.shape[0], -1)
    return leaky_relu(Dense(self.feature_dim, dtype=x.dtype, name="fc")(x))


ENCODERS = {"simple": SimpleEncoder, "residual": ResidualEncoder}
