"""3D convolutional GRU / LSTM over the view axis (the "3D-R2N2" in 3D-R2N2).

Every gate pre-activation is FCConv3D(x, h) = reshape(Dense(x)) + Conv3D(h) + b. The Dense part
does not depend on h, so it is computed for all views in one matmul before the scan, and only the
cheap 4^3 recurrence is scanned with `flax.linen.scan`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from r2n2_jax.models.layers import BIAS_INIT

GRID = 4
HIDDEN_CHANNELS = 128
NUM_GATES = 3  # GRU: update, reset, candidate. The paper's LSTM: forget, input, cell.

# Per-gate fans: in_axis=2 (features), out_axis=1 (grid cells x channels), gates are a batch axis.
_gate_input_init = jax.nn.initializers.variance_scaling(
    2.0, "fan_avg", "normal", in_axis=2, out_axis=1, batch_axis=0)
_conv_init = jax.nn.initializers.variance_scaling(2.0, "fan_avg", "normal")


class GateInputProjection(nn.Module):
  """The Dense (no bias) halves of the three FCConv3D gates: (B, V, F) -> (B, V, 3, 4, 4, 4, C)."""
  grid: int = GRID
  channels: int = HIDDEN_CHANNELS

  @nn.compact
  def __call__(self, x):
    cells = self.grid ** 3 * self.channels
    # Stored (gates, cells, features) and used as the matmul's left operand: XLA:CPU then reads
    # the 100 MB kernel in place. As (features, gates, cells), every step copied it and Adam read
    # its gradient transposed (~1 s of a 3.6 s B4/V5 step); as the right operand (an einsum),
    # every forward pass copied it (+50 ms per prediction). benchmarks/RESULTS.md.
    kernel = self.param("kernel", _gate_input_init, (NUM_GATES, cells, x.shape[-1]))
    y = jax.lax.dot_general(kernel.astype(x.dtype), x, (((2,), (2,)), ((), ())))  # (3, O, B, V)
    y = y.transpose(2, 3, 0, 1)
    return y.reshape(y.shape[:3] + (self.grid,) * 3 + (self.channels,))


def same_conv3d_as_matmul(x, kernel):
  """'SAME' 3D cross-correlation as one im2col matmul: (B, D, H, W, Cin), (k, k, k, Cin, Cout).

  On the 4^3 hidden grid this is several times faster than XLA:CPU's 3D conv, above all in the
  backward pass (kernel gradient); the math is the same up to float summation order.
  """
  k = kernel.shape[0]
  p = k // 2
  d, h, w = x.shape[1:4]
  padded = jnp.pad(x, ((0, 0),) + ((p, p),) * 3 + ((0, 0),))
  patches = jnp.stack([padded[:, i:i + d, j:j + h, l:l + w]
                       for i in range(k) for j in range(k) for l in range(k)], axis=-2)
  return jnp.einsum("bdhwtc,tco->bdhwo", patches, kernel.reshape((k ** 3,) + kernel.shape[3:]))


class _ConvKernel(nn.Module):
  """Holds a conv kernel with the name, shape and init of `nn.Conv(..., use_bias=False)`."""
  shape: tuple

  @nn.compact
  def __call__(self):
    return self.param("kernel", _conv_init, self.shape)


class GateConv(nn.Module):
  """The Conv3D(h, k, 'SAME', no bias) + per-channel bias half of one FCConv3D gate."""
  kernel_size: int
  channels: int = HIDDEN_CHANNELS

  @nn.compact
  def __call__(self, h):
    k = self.kernel_size
    kernel = _ConvKernel((k, k, k, h.shape[-1], self.channels), name="conv")()
    y = same_conv3d_as_matmul(h, kernel.astype(h.dtype))
    bias = self.param("bias", jax.nn.initializers.constant(BIAS_INIT), (self.channels,))
    return y + bias.astype(y.dtype)


def _masked(mask, new, old):
  """Keeps `old` where the per-example mask (B,) is False."""
  return jax.tree.map(
      lambda n, o: jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old)


class ConvGRUCell(nn.Module):
  """h' = u * h + (1 - u) * tanh(FCConv_h(x, r * h)); the carry is h (B, 4, 4, 4, C)."""
  kernel_size: int
  channels: int = HIDDEN_CHANNELS

  @nn.compact
  def __call__(self, h, inputs):
    gate_x, mask = inputs  # (B, 3, 4, 4, 4, C), (B,)
    conv = lambda name: GateConv(self.kernel_size, self.channels, name=name)
    u = nn.sigmoid(gate_x[:, 0] + conv("update")(h))
    r = nn.sigmoid(gate_x[:, 1] + conv("reset")(h))
    candidate = jnp.tanh(gate_x[:, 2] + conv("candidate")(r * h))
    new_h = u * h + (1.0 - u) * candidate
    return _masked(mask, new_h, h), None

  @staticmethod
  def initial_carry(batch, channels, dtype):
    return jnp.zeros((batch, GRID, GRID, GRID, channels), dtype)

  @staticmethod
  def hidden(carry):
    return carry


class ConvLSTMCell(nn.Module):
  """The paper's LSTM (no output gate): s' = f * s + i * tanh(FCConv_s(x, h)); h' = tanh(s')."""
  kernel_size: int
  channels: int = HIDDEN_CHANNELS

  @nn.compact
  def __call__(self, carry, inputs):
    gate_x, mask = inputs
    s, h = carry
    conv = lambda name: GateConv(self.kernel_size, self.channels, name=name)
    f = nn.sigmoid(gate_x[:, 0] + conv("forget")(h))
    i = nn.sigmoid(gate_x[:, 1] + conv("input")(h))
    new_s = f * s + i * jnp.tanh(gate_x[:, 2] + conv("cell")(h))
    new_h = jnp.tanh(new_s)
    return _masked(mask, (new_s, new_h), carry), None

  @staticmethod
  def initial_carry(batch, channels, dtype):
    zeros = jnp.zeros((batch, GRID, GRID, GRID, channels), dtype)
    return zeros, zeros

  @staticmethod
  def hidden(carry):
    return carry[1]


CELLS = {"gru": ConvGRUCell, "lstm": ConvLSTMCell}


class RecurrentGrid3D(nn.Module):
  """Scans a 3D conv cell over the views: features (B, V, F), mask (B, V) -> h (B, 4, 4, 4, C).

  Where `view_mask` is False the carry passes through unchanged, so padded views change nothing.
  """
  cell: str = "gru"
  kernel_size: int = 3
  channels: int = HIDDEN_CHANNELS  # Of the hidden state (the paper's 128).

  @nn.compact
  def __call__(self, features, view_mask):
    cell_cls = CELLS[self.cell]
    gate_x = GateInputProjection(channels=self.channels, name="input_projection")(features)
    scan = nn.scan(cell_cls, variable_broadcast="params", split_rngs={"params": False},
                   in_axes=1, out_axes=1)
    carry = cell_cls.initial_carry(features.shape[0], self.channels, gate_x.dtype)
    carry, _ = scan(self.kernel_size, self.channels, name="cell")(carry, (gate_x, view_mask))
    return cell_cls.hidden(carry)
