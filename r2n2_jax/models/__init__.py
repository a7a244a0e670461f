"""Model zoo: `build_model(config.model)` returns the R2N2 linen Module for a config."""

from r2n2_jax.models.r2n2 import R2N2


def build_model(model_config):
  """Returns the R2N2 Module described by `model_config` (encoder, decoder, cell, kernel_size,
  conv3d_impl)."""
  return R2N2(
      encoder=model_config.encoder,
      decoder=model_config.decoder,
      cell=model_config.cell,
      kernel_size=int(model_config.kernel_size),
      conv3d_impl=model_config.get("conv3d_impl", "auto"),
  )


__all__ = ["R2N2", "build_model"]
