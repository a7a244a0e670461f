"""The original 3D-R2N2 (Theano) weight files: safe loading and the layout conversion both ways.

The authors' code saves `Net.params` with `np.save(list_of_arrays)`: a .npy object array (a
pickle) of float32 arrays in parameter-creation order, W then b per layer, Wh, Wx, b per gate:
  ResidualGRUNet (63 arrays): conv1a conv1b conv2a-c conv3a-c conv4a-b conv5a-c conv6a-b fc7,
      t_x_s_update t_x_s_reset t_x_rs, conv7a-b conv8a-b conv9a-c conv10a-c conv11
  GRUNet (33 arrays): conv1-6 fc7, the same three gates, conv7-11
Its layouts: 2D conv W (out, in, kh, kw); 3D conv W (out, kd, in, kh, kw) on maps (N, D, C, H, W);
fc W (n_in, n_out) with the input flattened in (C, H, W) order; gate Wx (1024, 8192) with columns in
(D, C, H, W) order; biases (out,). Its convolutions are true convolutions (Theano's conv2d and
conv3d2d.conv3d flip every kernel axis); XLA's are cross-correlations, so kernels are flipped here.
"""

import codecs
import pickle
import re

import jax
import numpy as np

from r2n2_jax.models import model_width

# Original network -> our config module (configs/<name>.py).
CONFIGS = {"ResidualGRUNet": "residual_gru_k3", "GRUNet": "simple_gru_k3"}
GATES = (("t_x_s_update", "update"), ("t_x_s_reset", "reset"), ("t_x_rs", "candidate"))
_ENCODER = {
    "ResidualGRUNet": ("conv1a conv1b conv2a conv2b conv2c conv3a conv3b conv3c conv4a conv4b "
                       "conv5a conv5b conv5c conv6a conv6b").split(),
    "GRUNet": "conv1 conv2 conv3 conv4 conv5 conv6".split(),
}
_DECODER = {
    "ResidualGRUNet": "conv7a conv7b conv8a conv8b conv9a conv9b conv9c conv10a conv10b conv10c "
                      "conv11".split(),
    "GRUNet": "conv7 conv8 conv9 conv10 conv11".split(),
}
FEATURE_MAP = (256, 3, 3)  # (C, H, W) of the encoder's last pooled map, flattened into fc7.
HIDDEN = (4, 128, 4, 4)  # (D, C, H, W) of the recurrent state, the order of Wx's columns.


def _conv2d_in(w):
  return w[:, :, ::-1, ::-1].transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> flipped HWIO.


def _conv2d_out(k):
  return k.transpose(3, 2, 0, 1)[:, :, ::-1, ::-1]


def _conv3d_in(w):
  return w[:, ::-1, :, ::-1, ::-1].transpose(1, 3, 4, 2, 0)  # (out, kd, in, kh, kw) -> DHWIO.


def _conv3d_out(k):
  return k.transpose(4, 0, 3, 1, 2)[:, ::-1, :, ::-1, ::-1]


def _fc_in(w):
  c, h, wd = FEATURE_MAP
  return w.reshape(c, h, wd, -1).transpose(1, 2, 0, 3).reshape(c * h * wd, -1)  # Rows (H, W, C).


def _fc_out(k):
  c, h, wd = FEATURE_MAP
  return k.reshape(h, wd, c, -1).transpose(2, 0, 1, 3).reshape(c * h * wd, -1)


def _gate_x_in(w):
  d, c, h, wd = HIDDEN
  return w.reshape(-1, d, c, h, wd).transpose(1, 3, 4, 2, 0).reshape(d * h * wd * c, -1)


def _gate_x_out(k):
  d, c, h, wd = HIDDEN
  return k.reshape(d, h, wd, c, -1).transpose(4, 0, 3, 1, 2).reshape(-1, d * c * h * wd)


_IDENTITY = (lambda x: x, lambda x: x)
_CONV2D, _CONV3D = (_conv2d_in, _conv2d_out), (_conv3d_in, _conv3d_out)


def layout(network):
  """[(original tensor name, our parameter path, gate index or None, (to_ours, to_original))]."""
  entries = []
  for name in _ENCODER[network]:
    entries += [(f"{name}.W", ("encoder", name, "kernel"), None, _CONV2D),
                (f"{name}.b", ("encoder", name, "bias"), None, _IDENTITY)]
  entries += [("fc7.W", ("encoder", "fc", "kernel"), None, (_fc_in, _fc_out)),
              ("fc7.b", ("encoder", "fc", "bias"), None, _IDENTITY)]
  for index, (name, gate) in enumerate(GATES):
    entries += [(f"{name}.Wh", ("recurrent", "cell", gate, "conv", "kernel"), None, _CONV3D),
                (f"{name}.Wx", ("recurrent", "input_projection", "kernel"), index,
                 (_gate_x_in, _gate_x_out)),
                (f"{name}.b", ("recurrent", "cell", gate, "bias"), None, _IDENTITY)]
  for name in _DECODER[network]:
    stage, suffix = re.fullmatch(r"conv(\d+)(\w?)", name).groups()
    ours = f"conv{int(stage) - 6}{suffix}"  # Our decoder counts its own stages: conv7 -> conv1.
    entries += [(f"{name}.W", ("decoder", ours, "kernel"), None, _CONV3D),
                (f"{name}.b", ("decoder", ours, "bias"), None, _IDENTITY)]
  return entries


def network_of(model_config):
  """The original network a model config is, or ValueError."""
  key = (model_config.encoder, model_config.decoder, model_config.cell, int(model_config.kernel_size))
  width = model_width(model_config)
  if width != 1.0:
    raise ValueError(f"model width {width:g} has no original counterpart; the original networks "
                     "have width 1")
  networks = {("residual", "residual", "gru", 3): "ResidualGRUNet",
              ("simple", "simple", "gru", 3): "GRUNet"}
  if key not in networks:
    raise ValueError(f"model {key} has no original counterpart; only simple_gru_k3 (GRUNet) and "
                     "residual_gru_k3 (ResidualGRUNet) do")
  return networks[key]


def detect_network(arrays, path="weights"):
  """'ResidualGRUNet' or 'GRUNet' from the number of arrays, or a one-line ValueError."""
  counts = {len(layout(n)): n for n in CONFIGS}
  if len(arrays) not in counts:
    raise ValueError(f"{path}: {len(arrays)} arrays; an original ResidualGRUNet file has "
                     f"{len(layout('ResidualGRUNet'))} and a GRUNet file {len(layout('GRUNet'))}")
  return counts[len(arrays)]


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _set(tree, path, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def to_params(arrays, expected_params, network, path="weights"):
  """Original arrays -> our params (nested dict of float32 numpy arrays).

  `expected_params` is our model's parameter tree (abstract shapes are enough): each original
  array must have the shape our parameter converts to, else a one-line ValueError naming it.
  """
  expected = original_shapes(expected_params, network)
  params, gate_x = {}, {}
  for index, ((name, target, gate, (to_ours, _)), array) in enumerate(zip(layout(network), arrays)):
    array = np.asarray(array)
    if tuple(array.shape) != expected[index]:
      raise ValueError(f"{path}: array {index} ({name}) has shape {tuple(array.shape)}, expected "
                       f"{expected[index]}")
    if array.dtype.kind != "f":
      raise ValueError(f"{path}: array {index} ({name}) has dtype {array.dtype}, expected float")
    value = np.ascontiguousarray(to_ours(array.astype(np.float32, copy=False)))
    if gate is None:
      _set(params, target, value)
    else:
      gate_x.setdefault(target, {})[gate] = value
  for target, by_gate in gate_x.items():  # The three gates' Wx are one stacked kernel here.
    _set(params, target, np.stack([by_gate[g] for g in sorted(by_gate)]))
  return params


def to_arrays(params, network):
  """Our params -> the original's list of arrays (float32, C-contiguous), in its order."""
  arrays = []
  for _, source, gate, (_, to_original) in layout(network):
    value = _get(params, source)
    value = value if gate is None else value[gate]
    arrays.append(np.ascontiguousarray(to_original(np.asarray(value, np.float32))))
  return arrays


def original_shapes(params, network):
  """The shapes of the original's arrays for our (possibly abstract) params, in its order."""
  def shapes(tree):
    out = []
    for _, source, gate, (_, to_original) in layout(network):
      value = _get(tree, source)
      out.append(to_original(value if gate is None else value[gate]))
    return out
  abstract = jax.eval_shape(shapes, jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, np.float32), params))
  return [tuple(a.shape) for a in abstract]


# --- Safe loading -------------------------------------------------------------------------------

def _latin1_encode(text, encoding="latin1"):
  # Python 3 pickles bytes with protocol < 3 as _codecs.encode(str, 'latin1'): allow just that.
  if codecs.lookup(encoding).name != "iso8859-1":
    raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
  return codecs.encode(text, "latin1")


_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's array unpickling function, either version.

# Everything a pickled object array of numeric arrays references, under numpy 1.x and 2.x names.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Resolves only the globals numpy arrays need: no other callable can run during loading."""

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")


def load_arrays(path):
  """The list of arrays of an original weight file (.npy object array), loaded without running
  pickled code. Raises ValueError with one line for anything else."""
  try:
    with open(path, "rb") as f:
      version = np.lib.format.read_magic(f)
      read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                     (2, 0): np.lib.format.read_array_header_2_0}.get(version)
      if read_header is None:
        raise ValueError(f".npy format version {version} is not supported")
      shape, _, dtype = read_header(f)
      if not dtype.hasobject:
        raise ValueError(f"one {dtype} array of shape {shape}, not a list of arrays")
      # encoding="latin1": Python 2 pickles store array bytes as str (numpy's advice for them).
      loaded = _NumpyOnlyUnpickler(f, encoding="latin1").load()
  except FileNotFoundError:
    raise FileNotFoundError(f"{path}: no such file") from None
  except (pickle.UnpicklingError, ValueError, EOFError, TypeError, AttributeError) as e:
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ValueError(f"{path}: not an original 3D-R2N2 weight file ({message})") from None
  arrays = list(np.asarray(loaded, dtype=object).reshape(-1))
  for index, array in enumerate(arrays):
    if not isinstance(array, np.ndarray) or array.dtype.hasobject:
      raise ValueError(f"{path}: item {index} is a {type(array).__name__}, not a numeric array")
  return arrays


def save_arrays(path, arrays):
  """Writes arrays as the original's `Net.save` does (np.save of an object array)."""
  packed = np.empty(len(arrays), dtype=object)
  for index, array in enumerate(arrays):
    packed[index] = array
  np.save(path, packed, allow_pickle=True)
