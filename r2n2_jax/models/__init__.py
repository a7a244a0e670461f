"""Model zoo: `build_model(config.model)` returns the R2N2 linen Module for a config."""

from r2n2_jax.models.r2n2 import DEFAULT_INPUT_MEAN, DEFAULT_INPUT_STD, R2N2


COMPUTE_DTYPES = ("float32", "bfloat16")


def model_width(model_config):
  """config.model.width (a ConfigDict or a config.json dict); configs from before the field
  existed are the paper's width, 1."""
  return float(model_config.get("width", 1.0))


def build_model(model_config):
  """Returns the R2N2 Module described by `model_config` (encoder, decoder, cell, kernel_size,
  conv3d_impl, input_mean, input_std, dtype, width)."""
  dtype = model_config.get("dtype", "float32")
  if dtype not in COMPUTE_DTYPES:
    raise ValueError(f"config.model.dtype must be one of {COMPUTE_DTYPES}, got {dtype!r}")
  return R2N2(
      encoder=model_config.encoder,
      decoder=model_config.decoder,
      cell=model_config.cell,
      kernel_size=int(model_config.kernel_size),
      conv3d_impl=model_config.get("conv3d_impl", "auto"),
      input_mean=tuple(float(c) for c in model_config.get("input_mean", DEFAULT_INPUT_MEAN)),
      input_std=tuple(float(c) for c in model_config.get("input_std", DEFAULT_INPUT_STD)),
      dtype=dtype,
      width=model_width(model_config),
  )


__all__ = ["R2N2", "build_model", "model_width"]
