"""Default hyper-parameters: the paper's 3D-R2N2 training setup on the embedded procedural data.

Variants import this and override a few fields. `get_config("tiny")` shrinks data, batch and steps
(never the architecture) so a run finishes in a couple of minutes on 2 CPU cores.
"""

import difflib

import ml_collections

from r2n2_jax.config_lib import ConfigError
from r2n2_jax.models.r2n2 import DEFAULT_INPUT_MEAN, DEFAULT_INPUT_STD


def get_config(arg=None):
  """Returns the default config; `arg` is a comma-separated list of variants (ARG_VARIANTS)."""
  config = ml_collections.ConfigDict()

  # --- Model (DESIGN.md section 2) ---
  config.model = ml_collections.ConfigDict()
  config.model.encoder = "simple"  # 2D view encoder: "simple" or "residual".
  config.model.decoder = "simple"  # 3D decoder: "simple" or "residual".
  config.model.cell = "gru"  # 3D recurrent cell: "gru" or "lstm" (the paper's, no output gate).
  config.model.kernel_size = 3  # Recurrent Conv3D kernel on the 4^3 hidden grid: 1 or 3.
  config.model.conv3d_impl = "auto"  # Decoder 3D convs: "xla", "depth2d" (2D convs) or "auto".
  config.model.input_mean = DEFAULT_INPUT_MEAN  # Per-channel mean of your views, in [0, 1].
  config.model.input_std = DEFAULT_INPUT_STD  # Per-channel std; encoder sees (x - mean) / std.
  config.model.dtype = "float32"  # Compute dtype; "bfloat16" is an opt-in for GPUs (params f32).
  config.model.width = 1.0  # Channel multiplier of every layer; 1: the paper's networks.

  # --- Data ---
  config.dataset = "procedural"  # "procedural" (built on first use) or a TFDS dataset directory.
  config.data_dir = "~/.cache/r2n2_jax/data"  # Where datasets live; procedural data is built here.
  config.procedural = ml_collections.ConfigDict()
  config.procedural.num_objects = 2000  # Objects in the procedural dataset (all splits).
  config.procedural.views = 24  # Rendered views per object.
  config.procedural.seed = 0  # Seed of the procedural shapes, colours and cameras.
  config.train_split = "train"  # Split to train on.
  config.eval_split = "validation"  # Split for periodic validation.
  config.max_views = 5  # Views per example are drawn from [1, max_views] and padded to it.
  config.per_example_views = False  # True: each example draws its own n; False: one n per batch.
  config.eval_views = 5  # Views per validation example (first-n of a fixed seeded draw).
  config.random_flip = False  # Flip training images left-right (the original did, voxels not).
  config.view_buckets = (1, 2, 3, 4, 8, 12, 16)  # Train batch views pad to the least that fits.
  config.data_workers = -1  # grain worker processes (0: threads; -1: 0 on CPU, else cores - 1).
  config.prefetch_batches = 2  # Batches prepared ahead of the training step.

  # --- Optimisation (DESIGN.md section 3) ---
  config.batch_size = 36  # Global batch, split over all devices of all hosts.
  config.num_train_steps = 60_000  # Total training iterations.
  config.learning_rate = 1e-4  # Adam learning rate.
  config.lr_decay_steps = (20_000,)  # Steps at which the learning rate is multiplied by lr_decay.
  config.lr_decay = 0.1  # Learning-rate factor at each of lr_decay_steps.
  config.adam_b1 = 0.9  # Adam beta1.
  config.adam_b2 = 0.999  # Adam beta2.
  config.weight_decay = 5e-5  # L2 on weights (kernels) only, added to the gradient as in the paper.
  config.seed = 0  # Seed of initialisation, view draws and augmentation.

  # --- Loop, logging, checkpoints ---
  config.log_every_steps = 50  # Training metrics to TensorBoard every this many steps.
  config.eval_every_steps = 2000  # Validation loss and IoU@0.4 every this many steps.
  config.num_eval_batches = 20  # Validation batches per evaluation (-1: the whole split).
  config.eval_batch_size = 36  # Global validation batch.
  config.checkpoint_every_steps = 2000  # Orbax checkpoint under WORKDIR/checkpoints/<step>.
  config.keep_checkpoints = 3  # Checkpoints kept on disk (the newest).

  for variant in (arg or "").split(","):
    if variant:
      apply_variant(config, variant)
  return config


ARG_VARIANTS = ("tiny", "narrow", "original")


def apply_variant(config, variant):
  """Applies a named variant in place; an unknown name is a ConfigError."""
  if variant == "tiny":
    config.procedural.num_objects = 40
    config.procedural.views = 6
    config.max_views = 3
    config.view_buckets = ()  # One compiled step per run keeps tiny runs short.
    config.eval_views = 3
    config.batch_size = 2
    config.eval_batch_size = 2
    config.num_train_steps = 20
    config.lr_decay_steps = (1_000,)
    config.log_every_steps = 5
    config.eval_every_steps = 10
    config.num_eval_batches = 2
    config.checkpoint_every_steps = 10
  elif variant == "narrow":
    # 1/8 of every layer's channels (~1/60 of the work, 0.5M parameters): the paper's structure
    # for smoke runs (`:tiny,narrow`) and the tests; not a model to report.
    config.model.width = 0.125
  elif variant == "original":
    # The authors' input handling (their demo and test code): RGB / 255, no mean or std. For
    # weights imported with `python -m r2n2_jax.import_weights`.
    config.model.input_mean = (0.0, 0.0, 0.0)
    config.model.input_std = (1.0, 1.0, 1.0)
  else:
    hint = difflib.get_close_matches(variant, ARG_VARIANTS, n=1)
    raise ConfigError(f"unknown config variant {variant!r}" +
                      (f" (did you mean {hint[0]!r}?)" if hint else "") +
                      f"; known: {', '.join(ARG_VARIANTS)}")
