"""The one config loader: 'path.py[:arg]' (or a variant name) + 'key=value' overrides, validated.

launch.py and evaluate take `--config configs/x.py:tiny --config.batch_size=8`, sweep takes
`--configs x:tiny --set batch_size=8`; all of them end in `load` and `validate` here, so a bad
file, variant, field or value is the same one-line `ConfigError` everywhere, raised before any
data is built or model compiled.
"""

import ast
import difflib
import importlib.util
import math
import os

import ml_collections

from r2n2_jax.models import COMPUTE_DTYPES
from r2n2_jax.models.decoders import DECODERS
from r2n2_jax.models.encoders import ENCODERS
from r2n2_jax.models.layers import CONV3D_IMPLS
from r2n2_jax.models.recurrent import CELLS

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
KERNEL_SIZES = (1, 3)  # unpool_conv3d and the recurrent grid support 1x1x1 and 3x3x3 kernels.


class ConfigError(ValueError):
  """A config file, variant, override or field value a user got wrong."""


class UnknownFieldError(ConfigError, KeyError):
  """An override names a field the config does not have."""
  __str__ = ValueError.__str__  # Not KeyError's repr() of the message.


class FieldTypeError(ConfigError, TypeError):
  """An override's value does not parse as its field's type."""


def resolve_path(spec):
  """'path.py[:arg]' or 'variant[:arg]' -> (path of the .py file, arg or None)."""
  path, _, arg = spec.partition(":")
  if not path.endswith(".py"):
    path = os.path.join(CONFIG_DIR, f"{path}.py")
  return path, arg or None


def load(spec, overrides=()):
  """Loads 'path.py[:arg]' (or a variant name) and applies 'dotted.key=value' overrides.

  Returns (name, ConfigDict), name being the file's stem plus _<arg> (what sweep names the run).
  Does not validate: call `validate` once every override is in.
  """
  path, arg = resolve_path(spec)
  if not os.path.exists(path):
    raise ConfigError(f"{path}: no such config file")
  stem = os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(f"r2n2_config_{stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  try:
    config = module.get_config(arg)
  except ConfigError as e:
    raise ConfigError(f"{path}: {e}") from None
  apply_overrides(config, overrides)
  return stem + (f"_{arg.replace(',', '_')}" if arg else ""), config


def _field_names(config, prefix=""):
  for key, value in config.items():
    yield prefix + key
    if isinstance(value, ml_collections.ConfigDict):
      yield from _field_names(value, f"{prefix}{key}.")


def _unknown_field(config, key):
  hint = difflib.get_close_matches(key, list(_field_names(config)), n=1)
  return UnknownFieldError(f"the config has no field {key!r}" +
                     (f" (did you mean {hint[0]!r}?)" if hint else ""))


def _parse(key, text, current):
  """The value of `text` for a field currently holding `current` (its type decides)."""
  def fail(kind):
    return FieldTypeError(f"{key}={text}: not {kind}")

  if isinstance(current, bool):
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
      return True
    if lowered in ("false", "0", "no"):
      return False
    raise fail("a boolean (true/false)")
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text.strip())
  except (ValueError, SyntaxError):
    value = text
  if isinstance(current, int):
    if isinstance(value, float) and value.is_integer():
      value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
      raise fail("an integer")
    return value
  if isinstance(current, float):
    if isinstance(value, str) and value.strip().lower() in ("inf", "-inf", "nan"):
      value = float(value)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
      raise fail("a number")
    return float(value)
  if isinstance(current, (tuple, list)):
    if not isinstance(value, (tuple, list)):
      value = (value,)
    return type(current)(value)
  return value


def apply_overrides(config, overrides):
  """Applies 'dotted.key=value' strings in place; unknown fields and ill-typed values raise."""
  for override in overrides:
    key, sep, text = override.partition("=")
    if not sep:
      raise ConfigError(f"override {override!r} is not key=value")
    *parents, field = key.split(".")
    node = config
    for part in parents:
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise _unknown_field(config, key)
      node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or field not in node:
      raise _unknown_field(config, key)
    try:
      node[field] = _parse(key, text, node[field])
    except TypeError as e:  # ConfigDict fields keep their type.
      raise FieldTypeError(f"{key}={text}: {e}") from None


def split_flag_overrides(argv, flag="config"):
  """Takes `--config.key=value` / `--config.key value` out of argv -> (rest, ['key=value', ...]).

  What ml_collections' config_flags accepts, parsed here so that a typo is one ConfigError.
  A boolean field may be given bare (`--config.random_flip`).
  """
  prefix = f"--{flag}."
  rest, overrides, i = [], [], 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith(prefix):
      key, sep, value = arg[len(prefix):].partition("=")
      if not sep:
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
          value, i = argv[i + 1], i + 1
        else:
          value = "true"
      overrides.append(f"{key}={value}")
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def _is_int(value):
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
  return isinstance(value, (int, float)) and not isinstance(value, bool)


_MISSING = object()


def _get(config, dotted):
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      return _MISSING  # A config.json of an older version: nothing to check.
    node = node[part]
  return node


class _Checker:
  """Collects `config.<field>=<value>: <requirement>` for every field outside its domain."""

  def __init__(self, config):
    self.config, self.errors = config, []

  def check(self, name, ok, requirement):
    value = _get(self.config, name)
    if value is not _MISSING and not ok(value):
      shown = tuple(value) if isinstance(value, list) else value
      self.errors.append(f"config.{name}={shown!r}: {requirement}")

  def one_of(self, name, choices):
    self.check(name, lambda v: v in choices, "must be one of " + ", ".join(map(repr, choices)))

  def at_least(self, name, low, integer=True):
    self.check(name, lambda v: (_is_int(v) if integer else _is_number(v)) and v >= low,
               f"must be {'an integer' if integer else 'a number'} >= {low}")

  def raise_errors(self):
    if self.errors:
      raise ConfigError("; ".join(self.errors))


def _check_model(c):
  c.one_of("model.encoder", tuple(ENCODERS))
  c.one_of("model.decoder", tuple(DECODERS))
  c.one_of("model.cell", tuple(CELLS))
  c.one_of("model.kernel_size", KERNEL_SIZES)
  c.one_of("model.conv3d_impl", CONV3D_IMPLS)
  c.one_of("model.dtype", COMPUTE_DTYPES)
  three = lambda v: (isinstance(v, (tuple, list)) and len(v) == 3 and
                     all(_is_number(x) and math.isfinite(x) for x in v))
  c.check("model.input_mean", three, "must be 3 finite numbers")
  c.check("model.input_std", lambda v: three(v) and all(x > 0 for x in v),
          "must be 3 finite numbers > 0")
  c.check("model.width", lambda v: _is_number(v) and 0 < v <= 16,
          "must be a number in (0, 16] (1: the paper's channel counts)")


def validate_model(config):
  """Raises ConfigError naming every config.model field outside its domain."""
  c = _Checker(config)
  _check_model(c)
  c.raise_errors()
  return config


def validate(config, num_devices=None):
  """Raises ConfigError naming every field outside its domain (all of them, on one line).

  `num_devices`: when given, the batch sizes must divide over that many devices.
  """
  c = _Checker(config)
  _check_model(c)
  check, one_of, at_least, errors = c.check, c.one_of, c.at_least, c.errors
  dataset = _get(config, "dataset")
  check("dataset", lambda v: isinstance(v, str) and v, "must be 'procedural' or a dataset directory")
  if dataset == "procedural":
    at_least("procedural.num_objects", 3)
    at_least("procedural.views", 1)
    views = _get(config, "procedural.views")
    if _is_int(views):
      for name in ("max_views", "eval_views"):
        check(name, lambda v: not _is_int(v) or v <= views,
              f"the procedural data has only procedural.views={views} views per object")
  elif isinstance(dataset, str) and dataset:
    path = os.path.expanduser(dataset)
    data_dir = _get(config, "data_dir")
    if not os.path.isabs(path) and not os.path.exists(path) and isinstance(data_dir, str):
      path = os.path.join(os.path.expanduser(data_dir), path)
    if not os.path.exists(os.path.join(path, "dataset_info.json")):
      errors.append(f"config.dataset={dataset!r}: {path} is not a TFDS dataset directory "
                    "(no dataset_info.json); use 'procedural' or a directory written by "
                    "`python -m data_prep`")
  for name in ("max_views", "eval_views"):
    at_least(name, 1)
  at_least("prefetch_batches", 0)
  check("data_workers", lambda v: _is_int(v) and v >= -1, "must be >= 0, or -1 (auto)")
  check("view_buckets", lambda v: all(_is_int(b) and b >= 1 for b in v) and list(v) == sorted(
      set(v)), "must be increasing view counts >= 1")

  for name in ("batch_size", "eval_batch_size"):
    at_least(name, 1)
    if num_devices:
      check(name, lambda v: not _is_int(v) or v < 1 or v % num_devices == 0,
            f"must be divisible by the {num_devices} devices")
  at_least("num_train_steps", 1)
  check("learning_rate", lambda v: _is_number(v) and v > 0, "must be > 0")
  check("lr_decay", lambda v: _is_number(v) and v > 0, "must be > 0")
  check("lr_decay_steps", lambda v: all(_is_int(s) and s >= 1 for s in v),
        "must be integers >= 1")
  for name in ("adam_b1", "adam_b2"):
    check(name, lambda v: _is_number(v) and 0 <= v < 1, "must lie in [0, 1)")
  at_least("weight_decay", 0, integer=False)
  check("seed", _is_int, "must be an integer")
  for name in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
    at_least(name, 1)
  check("num_eval_batches", lambda v: _is_int(v) and (v >= 1 or v == -1), "must be >= 1 or -1")
  c.raise_errors()
  return config
