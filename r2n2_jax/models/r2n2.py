"""The full 3D-R2N2: encoder -> 3D conv recurrence over views -> 3D decoder."""

import flax.linen as nn
import jax.numpy as jnp

from r2n2_jax.models.decoders import DECODERS
from r2n2_jax.models.encoders import ENCODERS
from r2n2_jax.models.recurrent import RecurrentGrid3D


class R2N2(nn.Module):
  """views (B, V, 127, 127, 3) float32, view_mask (B, V) bool -> logits (B, 32, 32, 32, 2)."""
  encoder: str = "simple"
  decoder: str = "simple"
  cell: str = "gru"
  kernel_size: int = 3
  conv3d_impl: str = "auto"  # Decoder 3D-conv implementation, see layers.conv3d.

  @nn.compact
  def __call__(self, views, view_mask):
    b, v = views.shape[:2]
    # The encoder does not depend on the recurrence: run it once on all B x V views.
    features = ENCODERS[self.encoder](name="encoder")(views.reshape((b * v,) + views.shape[2:]))
    features = features.reshape(b, v, -1)
    h = RecurrentGrid3D(self.cell, self.kernel_size, name="recurrent")(
        features, jnp.asarray(view_mask, bool))
    return DECODERS[self.decoder](conv3d_impl=self.conv3d_impl, name="decoder")(h)
