"""A plain numpy forward pass of the original 3D-R2N2 Theano networks, in the original layouts.

Written from the original code's definitions (chrischoy/3D-R2N2: models/gru_net.py,
models/res_gru_net.py, lib/layers.py, demo.py), independently of r2n2_jax: its own parameter
list, shapes and layouts, so a layout or flip error in the importer cannot cancel out here.
  - images (V, N, 3, 127, 127): RGB / 255, views first (the original's theano.scan axis);
  - ConvLayer: TRUE 2D convolution (Theano conv2d flips the kernel), zero padding (k - 1) / 2,
    W (out, in, kh, kw); PoolLayer: 2x2 stride 2 max with 1 pixel of padding that Theano leaves
    out of every window (never the max); LeakyReLU: 0.505 x + 0.495 |x| (slope 0.01);
  - FlattenLayer flattens (C, H, W); TensorProductLayer x @ W + b with W (n_in, n_out);
  - 3D maps are (N, D, C, H, W); Conv3DLayer is a TRUE 3D convolution (conv3d2d flips all three
    kernel axes) with W (out, kd, in, kh, kw) and zero padding (k - 1) / 2;
  - FCConv3DLayer: conv3d(h, Wh) + reshape(x @ Wx, (N, 4, 128, 4, 4)) + b;
  - GRU: u = sig(FCConv_u(h, x)), r = sig(FCConv_r(h, x)), h' = u h + (1 - u) tanh(FCConv(r h, x));
  - Unpool3DLayer puts each value at the first corner of its 2x2x2 block;
  - output: softmax over axis 2 of (N, 32, 2, 32, 32); class 1 is "occupied".
"""

import numpy as np

GATES = ("t_x_s_update", "t_x_s_reset", "t_x_rs")
_GATE_WH = (128, 3, 128, 3, 3)
_GATE_WX = (1024, 4 * 128 * 4 * 4)
FC7 = (256 * 3 * 3, 1024)

# (name, W shape) in the original's parameter order; every layer also has a bias (out,).
SPECS = {
    "ResidualGRUNet": [
        ("conv1a", (96, 3, 7, 7)), ("conv1b", (96, 96, 3, 3)),
        ("conv2a", (128, 96, 3, 3)), ("conv2b", (128, 128, 3, 3)), ("conv2c", (128, 96, 1, 1)),
        ("conv3a", (256, 128, 3, 3)), ("conv3b", (256, 256, 3, 3)), ("conv3c", (256, 128, 1, 1)),
        ("conv4a", (256, 256, 3, 3)), ("conv4b", (256, 256, 3, 3)),
        ("conv5a", (256, 256, 3, 3)), ("conv5b", (256, 256, 3, 3)), ("conv5c", (256, 256, 1, 1)),
        ("conv6a", (256, 256, 3, 3)), ("conv6b", (256, 256, 3, 3)),
        ("fc7", FC7)] + [(g, "gate") for g in GATES] + [
        ("conv7a", (128, 3, 128, 3, 3)), ("conv7b", (128, 3, 128, 3, 3)),
        ("conv8a", (128, 3, 128, 3, 3)), ("conv8b", (128, 3, 128, 3, 3)),
        ("conv9a", (64, 3, 128, 3, 3)), ("conv9b", (64, 3, 64, 3, 3)), ("conv9c", (64, 1, 128, 1, 1)),
        ("conv10a", (32, 3, 64, 3, 3)), ("conv10b", (32, 3, 32, 3, 3)),
        ("conv10c", (32, 3, 32, 3, 3)), ("conv11", (2, 3, 32, 3, 3))],
    "GRUNet": [
        ("conv1", (96, 3, 7, 7)), ("conv2", (128, 96, 3, 3)), ("conv3", (256, 128, 3, 3)),
        ("conv4", (256, 256, 3, 3)), ("conv5", (256, 256, 3, 3)), ("conv6", (256, 256, 3, 3)),
        ("fc7", FC7)] + [(g, "gate") for g in GATES] + [
        ("conv7", (128, 3, 128, 3, 3)), ("conv8", (128, 3, 128, 3, 3)), ("conv9", (64, 3, 128, 3, 3)),
        ("conv10", (32, 3, 64, 3, 3)), ("conv11", (2, 3, 32, 3, 3))],
}


def tensor_shapes(network):
  """[(tensor name, shape)] in the order of the original's `Net.params`."""
  out = []
  for name, shape in SPECS[network]:
    if shape == "gate":
      out += [(f"{name}.Wh", _GATE_WH), (f"{name}.Wx", _GATE_WX), (f"{name}.b", (128,))]
    else:  # Conv W (out, ...); fc W (n_in, n_out).
      out += [(f"{name}.W", shape), (f"{name}.b", (shape[-1] if name == "fc7" else shape[0],))]
  return out


def random_weights(network, seed=0):
  """Random float32 arrays in the original layout: weights N(0, 2 / mean fan) as the original's
  'msra' filler (which keeps activations neither dead nor saturated), biases N(0.1, 0.05)
  (random, so that a misplaced bias shows)."""
  rng = np.random.default_rng(seed)
  arrays = []
  for name, shape in tensor_shapes(network):
    if name.endswith(".b"):
      arrays.append(rng.normal(0.1, 0.05, shape).astype(np.float32))
      continue
    if name.endswith(".Wx"):
      fan = (shape[0] + 128) / 2  # The original: fan_in 4 (depth), fan_out 128; we use the fc fan.
    elif len(shape) == 5:
      fan = (np.prod(shape[1:]) + np.prod(shape) / shape[2]) / 2
    else:
      fan = (np.prod(shape[1:]) + np.prod(shape) / shape[1]) / 2
    arrays.append(rng.normal(0.0, np.sqrt(2.0 / fan), shape).astype(np.float32))
  return arrays


def named(arrays, network):
  return {name: a for (name, _), a in zip(tensor_shapes(network), arrays)}


def leaky_relu(x):
  return 0.505 * x + 0.495 * np.abs(x)


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def conv2d(x, w, b):
  """True 2D convolution with 'same' zero padding: x (N, C, H, W), w (O, C, kh, kw)."""
  _, _, kh, kw = w.shape
  n, _, h, wd = x.shape
  xp = np.pad(x, ((0, 0), (0, 0), ((kh - 1) // 2,) * 2, ((kw - 1) // 2,) * 2))
  flipped = w[:, :, ::-1, ::-1]
  out = 0
  for i in range(kh):
    for j in range(kw):
      out = out + np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd], flipped[:, :, i, j],
                            optimize=True)
  return out + b[None, :, None, None]


def max_pool(x):
  """2x2 stride-2 max-pool, 1 pixel of padding per side that no window takes: H -> H // 2 + 1."""
  n, c, h, w = x.shape
  oh, ow = h // 2 + 1, w // 2 + 1
  padded = np.full((n, c, 2 * oh, 2 * ow), -np.inf, x.dtype)
  padded[:, :, 1:h + 1, 1:w + 1] = x
  return padded.reshape(n, c, oh, 2, ow, 2).max(axis=(3, 5))


def conv3d(x, w, b=None):
  """True 3D convolution with 'same' zero padding: x (N, D, C, H, W), w (O, kd, C, kh, kw)."""
  _, kd, _, kh, kw = w.shape
  n, d, _, h, wd = x.shape
  pad = lambda k: ((k - 1) // 2,) * 2
  xp = np.pad(x, ((0, 0), pad(kd), (0, 0), pad(kh), pad(kw)))
  flipped = w[:, ::-1, :, ::-1, ::-1]
  out = 0
  for a in range(kd):
    for i in range(kh):
      for j in range(kw):
        out = out + np.einsum("ndchw,oc->ndohw", xp[:, a:a + d, :, i:i + h, j:j + wd],
                              flipped[:, a, :, i, j], optimize=True)
  return out if b is None else out + b[None, None, :, None, None]


def unpool(x):
  n, d, c, h, w = x.shape
  out = np.zeros((n, 2 * d, c, 2 * h, 2 * w), x.dtype)
  out[:, ::2, :, ::2, ::2] = x
  return out


def encode(p, network, images):
  """images (N, 3, 127, 127) -> fc7 features after the leaky ReLU (N, 1024)."""
  x = images
  if network == "GRUNet":
    for i in range(1, 7):
      x = leaky_relu(max_pool(conv2d(x, p[f"conv{i}.W"], p[f"conv{i}.b"])))
  else:
    conv = lambda name, inp: conv2d(inp, p[f"{name}.W"], p[f"{name}.b"])
    x = max_pool(leaky_relu(conv("conv1b", leaky_relu(conv("conv1a", x)))))
    for s in range(2, 7):
      y = leaky_relu(conv(f"conv{s}b", leaky_relu(conv(f"conv{s}a", x))))
      if s in (2, 3, 5):
        y = conv(f"conv{s}c", x) + y
      elif s == 6:
        y = x + y
      x = max_pool(y)
  return leaky_relu(x.reshape(x.shape[0], -1) @ p["fc7.W"] + p["fc7.b"])


def fc_conv3d(p, gate, h, features):
  fc = (features @ p[f"{gate}.Wx"]).reshape(h.shape)
  return conv3d(h, p[f"{gate}.Wh"]) + fc + p[f"{gate}.b"][None, None, :, None, None]


def gru_step(p, h, features):
  u = sigmoid(fc_conv3d(p, "t_x_s_update", h, features))
  r = sigmoid(fc_conv3d(p, "t_x_s_reset", h, features))
  return u * h + (1 - u) * np.tanh(fc_conv3d(p, "t_x_rs", r * h, features))


def decode(p, network, h):
  """Hidden state (N, 4, 128, 4, 4) -> P(occupied) (N, 32, 32, 32) in (D, H, W) order."""
  conv = lambda name, inp: conv3d(inp, p[f"{name}.W"], p[f"{name}.b"])
  if network == "GRUNet":
    x = h
    for name in ("conv7", "conv8", "conv9"):
      x = leaky_relu(conv(name, unpool(x)))
    x = conv("conv11", leaky_relu(conv("conv10", x)))
  else:
    x = h
    for s in (7, 8):
      u = unpool(x)
      x = u + leaky_relu(conv(f"conv{s}b", leaky_relu(conv(f"conv{s}a", u))))
    u = unpool(x)
    x = conv("conv9c", u) + leaky_relu(conv("conv9b", leaky_relu(conv("conv9a", u))))
    a = leaky_relu(conv("conv10a", x))
    x = conv("conv11", conv("conv10c", a) + leaky_relu(conv("conv10b", a)))
  e = np.exp(x - x.max(axis=2, keepdims=True))
  return (e / e.sum(axis=2, keepdims=True))[:, :, 1]


def hidden_states(arrays, network, views):
  """views (V, N, 3, 127, 127) in [0, 1] -> the GRU state after each view, [(N, 4, 128, 4, 4)]."""
  p = named(arrays, network)
  h = np.zeros((views.shape[1], 4, 128, 4, 4), views.dtype)
  states = []
  for view in views:
    h = gru_step(p, h, encode(p, network, view))
    states.append(h)
  return states


def forward(arrays, network, views):
  """views (V, N, 3, 127, 127) in [0, 1] -> P(occupied) (N, 32, 32, 32) after all V views."""
  return decode(named(arrays, network), network, hidden_states(arrays, network, views)[-1])
