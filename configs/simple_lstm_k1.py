"""3D-R2N2 variant: simple encoder/decoder, 3D conv LSTM with a 1x1x1 recurrent kernel."""

from configs import default


def get_config(arg=None):
  config = default.get_config(arg)
  config.model.encoder = "simple"
  config.model.decoder = "simple"
  config.model.cell = "lstm"
  config.model.kernel_size = 1
  return config
