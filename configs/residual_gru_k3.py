"""3D-R2N2 variant: residual encoder/decoder, 3D conv GRU with a 3x3x3 recurrent kernel."""

from configs import default


def get_config(arg=None):
  config = default.get_config(arg)
  config.model.encoder = "residual"
  config.model.decoder = "residual"
  config.model.cell = "gru"
  config.model.kernel_size = 3
  return config
