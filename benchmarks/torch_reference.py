"""The same 3D-R2N2 network in PyTorch (NCHW / NCDHW, oneDNN kernels), for side-by-side timings.

Optional `[bench]` extra (torch 2.13.0 CPU); nothing under r2n2_jax/ imports it. It follows
DESIGN.md section 2 layer by layer in the straightforward form (zero-insertion unpooling, then a
3x3x3 conv), with the same parameter count as the JAX model (checked by train_step.py --vs-torch).
"""

import torch
from torch import nn
import torch.nn.functional as F

ENCODER_FILTERS = (96, 128, 256, 256, 256, 256)
DECODER_FILTERS = (128, 128, 64, 32, 2)
GRID, HIDDEN, FEATURES = 4, 128, 1024


def lrelu(x):
  return F.leaky_relu(x, 0.01)


def pool(x):
  return F.max_pool2d(x, 2, 2, padding=1)


def unpool(x):
  """2x2x2 zero insertion: (B, C, D, H, W) -> (B, C, 2D, 2H, 2W), value at the first corner."""
  b, c, d, h, w = x.shape
  out = x.new_zeros((b, c, 2 * d, 2 * h, 2 * w))
  out[:, :, ::2, ::2, ::2] = x
  return out


def conv2(cin, cout, k):
  return nn.Conv2d(cin, cout, k, padding=k // 2)


def conv3(cin, cout, k=3):
  return nn.Conv3d(cin, cout, k, padding=k // 2)


class SimpleEncoder(nn.Module):

  def __init__(self):
    super().__init__()
    chans = (3,) + ENCODER_FILTERS
    self.convs = nn.ModuleList(
        conv2(chans[i], chans[i + 1], 7 if i == 0 else 3) for i in range(6))
    self.fc = nn.Linear(3 * 3 * 256, FEATURES)

  def forward(self, x):
    for conv in self.convs:
      x = lrelu(pool(conv(x)))
    return lrelu(self.fc(x.flatten(1)))


class ResidualEncoder(nn.Module):

  def __init__(self):
    super().__init__()
    f = ENCODER_FILTERS
    self.conv1a, self.conv1b = conv2(3, f[0], 7), conv2(f[0], f[0], 3)
    self.a = nn.ModuleList(conv2(f[s - 2], f[s - 1], 3) for s in range(2, 7))
    self.b = nn.ModuleList(conv2(f[s - 1], f[s - 1], 3) for s in range(2, 7))
    self.c = nn.ModuleDict({str(s): conv2(f[s - 2], f[s - 1], 1) for s in (2, 3, 5)})
    self.fc = nn.Linear(3 * 3 * 256, FEATURES)

  def forward(self, x):
    x = pool(lrelu(self.conv1b(lrelu(self.conv1a(x)))))
    for i, s in enumerate(range(2, 7)):
      y = lrelu(self.b[i](lrelu(self.a[i](x))))
      if str(s) in self.c:
        y = y + self.c[str(s)](x)
      elif s == 6:
        y = y + x
      x = pool(y)
    return lrelu(self.fc(x.flatten(1)))


class Recurrent(nn.Module):
  """FCConv3D GRU / paper LSTM over views; the Dense halves for all views in one matmul."""

  def __init__(self, cell, k):
    super().__init__()
    self.cell = cell
    self.proj = nn.Linear(FEATURES, 3 * GRID ** 3 * HIDDEN, bias=False)
    self.convs = nn.ModuleList(
        nn.Conv3d(HIDDEN, HIDDEN, k, padding=k // 2, bias=False) for _ in range(3))
    self.biases = nn.Parameter(torch.full((3, HIDDEN, 1, 1, 1), 0.1))

  def gate(self, g, gx, h):
    return gx[:, g] + self.convs[g](h) + self.biases[g]

  def forward(self, features, mask):
    b, v = features.shape[:2]
    gx = self.proj(features).view(b, v, 3, GRID, GRID, GRID, HIDDEN).permute(0, 1, 2, 6, 3, 4, 5)
    h = features.new_zeros((b, HIDDEN, GRID, GRID, GRID))
    s = h
    for t in range(v):
      x, m = gx[:, t], mask[:, t].view(b, 1, 1, 1, 1)
      if self.cell == "gru":
        u = torch.sigmoid(self.gate(0, x, h))
        r = torch.sigmoid(self.gate(1, x, h))
        new_h = u * h + (1 - u) * torch.tanh(self.gate(2, x, r * h))
      else:
        f = torch.sigmoid(self.gate(0, x, h))
        i = torch.sigmoid(self.gate(1, x, h))
        new_s = f * s + i * torch.tanh(self.gate(2, x, h))
        s = torch.where(m, new_s, s)
        new_h = torch.tanh(new_s)
      h = torch.where(m, new_h, h)
    return h


class SimpleDecoder(nn.Module):

  def __init__(self):
    super().__init__()
    chans = (HIDDEN,) + DECODER_FILTERS
    self.convs = nn.ModuleList(conv3(chans[i], chans[i + 1]) for i in range(5))

  def forward(self, x):
    for i, conv in enumerate(self.convs[:4]):
      x = lrelu(conv(unpool(x) if i < 3 else x))
    return self.convs[4](x)


class ResidualDecoder(nn.Module):

  def __init__(self):
    super().__init__()
    f = DECODER_FILTERS
    ins = (HIDDEN, f[0], f[1])
    self.a = nn.ModuleList(conv3(ins[i], f[i]) for i in range(3))
    self.b = nn.ModuleList(conv3(f[i], f[i]) for i in range(3))
    self.c3 = conv3(f[1], f[2], 1)
    self.conv4a, self.conv4b, self.conv4c = conv3(f[2], f[3]), conv3(f[3], f[3]), conv3(f[3], f[3])
    self.conv5 = conv3(f[3], f[4])

  def forward(self, x):
    for i in range(3):
      u = unpool(x)
      y = lrelu(self.b[i](lrelu(self.a[i](u))))
      x = y + (self.c3(u) if i == 2 else u)
    a = lrelu(self.conv4a(x))
    b = lrelu(self.conv4b(a))
    return self.conv5(b + self.conv4c(a))


class R2N2(nn.Module):
  """views (B, V, 3, 127, 127) float32, mask (B, V) bool -> logits (B, 2, 32, 32, 32)."""

  def __init__(self, encoder, decoder, cell, kernel_size, input_mean, input_std):
    super().__init__()
    self.register_buffer("input_mean", torch.tensor(input_mean).view(1, 1, 3, 1, 1))
    self.register_buffer("input_std", torch.tensor(input_std).view(1, 1, 3, 1, 1))
    self.encoder = {"simple": SimpleEncoder, "residual": ResidualEncoder}[encoder]()
    self.recurrent = Recurrent(cell, kernel_size)
    self.decoder = {"simple": SimpleDecoder, "residual": ResidualDecoder}[decoder]()

  def forward(self, views, mask):
    b, v = views.shape[:2]
    normalised = (views - self.input_mean) / self.input_std  # As the JAX model.
    features = self.encoder(normalised.flatten(0, 1)).view(b, v, -1)
    return self.decoder(self.recurrent(features, mask))


def build(model_config):
  """The torch twin of r2n2_jax.models.build_model(config.model)."""
  return R2N2(model_config.encoder, model_config.decoder, model_config.cell,
              int(model_config.kernel_size), tuple(model_config.input_mean),
              tuple(model_config.input_std))


def num_params(model):
  return sum(p.numel() for p in model.parameters())


def make_train_step(model, learning_rate=1e-4, weight_decay=5e-5):
  """Forward + backward + Adam (L2 on weights only, as the JAX step) -> step(views, mask, voxels)."""
  decay = [p for n, p in model.named_parameters() if not n.endswith("bias") and "biases" not in n]
  rest = [p for n, p in model.named_parameters() if n.endswith("bias") or "biases" in n]
  opt = torch.optim.Adam([{"params": decay, "weight_decay": weight_decay},
                          {"params": rest, "weight_decay": 0.0}], lr=learning_rate)

  def step(views, mask, voxels):
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(views, mask), voxels)
    loss.backward()
    opt.step()
    return loss.detach()

  return step


def random_batch(batch, views, seed=0):
  """Torch inputs: views (B, V, 3, 127, 127) in [0, 1], all-True mask, int64 voxels (B, 32^3)."""
  g = torch.Generator().manual_seed(seed)
  return (torch.rand((batch, views, 3, 127, 127), generator=g),
          torch.ones((batch, views), dtype=torch.bool),
          torch.randint(0, 2, (batch, 32, 32, 32), generator=g))
