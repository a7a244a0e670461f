"""The config loader and validation; bad configs are one line from every entry point."""

import os
import subprocess
import sys

import pytest

from r2n2_jax import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs/simple_gru_k1.py")


def test_file_variant_and_typed_overrides():
  name, config = config_lib.load(CONFIG + ":tiny", ["batch_size=4", "model.cell=lstm",
                                                    "lr_decay_steps=5,6", "random_flip=true",
                                                    "learning_rate=3e-4", "num_train_steps=1e3"])
  assert name == "simple_gru_k1_tiny"
  assert (config.batch_size, config.model.cell, config.lr_decay_steps, config.random_flip,
          config.learning_rate, config.num_train_steps) == (4, "lstm", (5, 6), True, 3e-4, 1000)
  assert config_lib.validate(config, num_devices=2) is config
  assert config_lib.load("simple_gru_k1:tiny")[1].to_dict() == config_lib.load(CONFIG + ":tiny")[1].to_dict()


def test_flag_overrides_are_split_out_of_argv():
  argv = ["launch.py", "--config", "c.py:tiny", "--config.batch_size=8", "--workdir", "w",
          "--config.model.cell", "lstm", "--config.random_flip"]
  rest, overrides = config_lib.split_flag_overrides(argv)
  assert rest == ["launch.py", "--config", "c.py:tiny", "--workdir", "w"]
  assert overrides == ["batch_size=8", "model.cell=lstm", "random_flip=true"]


@pytest.mark.parametrize("overrides, message", [
    (["batchsize=4"], "the config has no field 'batchsize' (did you mean 'batch_size'?)"),
    (["model.cel=lstm"], "did you mean 'model.cell'?"),
    (["num_train_steps=many"], "num_train_steps=many: not an integer"),
    (["random_flip=maybe"], "not a boolean"),
])
def test_bad_overrides(overrides, message):
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load(CONFIG + ":tiny", overrides)
  assert message in str(error.value)


def test_unknown_variant_and_file():
  with pytest.raises(config_lib.ConfigError, match=r"unknown config variant 'tinny' \(did you mean 'tiny'\?\)"):
    config_lib.load(CONFIG + ":tinny")
  with pytest.raises(config_lib.ConfigError, match="nope.py: no such config file"):
    config_lib.load("nope.py")


@pytest.mark.parametrize("override, message", [
    ("model.kernel_size=2", "config.model.kernel_size=2: must be one of 1, 3"),
    ("model.cell=rnn", "config.model.cell='rnn': must be one of 'gru', 'lstm'"),
    ("model.encoder=vit", "config.model.encoder='vit': must be one of 'simple', 'residual'"),
    ("model.dtype=float16", "config.model.dtype='float16': must be one of"),
    ("model.input_std=(0.2,0.0,0.2)", "config.model.input_std=(0.2, 0.0, 0.2): must be 3 finite"),
    ("learning_rate=-1", "config.learning_rate=-1.0: must be > 0"),
    ("learning_rate=nan", "config.learning_rate=nan: must be > 0"),
    ("max_views=0", "config.max_views=0: must be an integer >= 1"),
    ("model.width=0", "config.model.width=0.0: must be a number in (0, 16]"),
    ("max_views=7", "config.max_views=7: the procedural data has only procedural.views=6 views"),
    ("batch_size=3", "config.batch_size=3: must be divisible by the 2 devices"),
    ("eval_batch_size=0", "config.eval_batch_size=0: must be an integer >= 1"),
    ("num_train_steps=0", "config.num_train_steps=0: must be an integer >= 1"),
    ("adam_b2=1.0", "config.adam_b2=1.0: must lie in [0, 1)"),
    ("keep_checkpoints=0", "config.keep_checkpoints=0: must be an integer >= 1"),
    ("num_eval_batches=0", "config.num_eval_batches=0: must be >= 1 or -1"),
    ("dataset=/no/such/dir", "config.dataset='/no/such/dir': /no/such/dir is not a TFDS dataset"),
])
def test_fields_outside_their_domain_are_named(override, message):
  _, config = config_lib.load(CONFIG + ":tiny", [override])
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.validate(config, num_devices=2)
  assert message in str(error.value) and "\n" not in str(error.value)


def test_every_bad_field_is_named_at_once():
  _, config = config_lib.load(CONFIG + ":tiny", ["model.cell=rnn", "learning_rate=-1"])
  with pytest.raises(config_lib.ConfigError, match="model.cell.*; config.learning_rate"):
    config_lib.validate(config)


def _run(module_or_script, *args, env=None):
  cmd = [sys.executable] + ([module_or_script] if module_or_script.endswith(".py")
                            else ["-m", module_or_script]) + list(args)
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                        env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})


# One case per way launch can refuse a config (a field's domain, the device count, a variant, a
# field name, the dataset); every domain is checked in-process above. ~12 s a process here.
@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    ([CONFIG + ":tiny", "--config.model.kernel_size=2"], "config.model.kernel_size=2: must be one of 1, 3"),
    ([CONFIG + ":tiny", "--config.batch_size=3"], "config.batch_size=3: must be divisible by the 2 devices"),
    ([CONFIG + ":tinny"], "unknown config variant 'tinny' (did you mean 'tiny'?)"),
    ([CONFIG + ":tiny", "--config.batchsize=4"], "no field 'batchsize' (did you mean 'batch_size'?)"),
    ([CONFIG + ":tiny", "--config.dataset=/no/such/dataset"], "/no/such/dataset is not a TFDS dataset"),
])
def test_launch_rejects_bad_configs_in_one_line_before_writing_anything(tmp_path, args, message):
  workdir = tmp_path / "fresh"
  proc = _run(os.path.join(ROOT, "launch.py"), "--workdir", str(workdir), "--config", *args,
              env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("launch: error: ") and message in last, last
  assert not os.path.exists(workdir / "config.json")


@pytest.mark.slow
def test_evaluate_and_sweep_use_the_same_loader_and_tracebacks_on_request(tmp_path):
  proc = _run("r2n2_jax.evaluate", f"--workdir={tmp_path}", f"--config={CONFIG}:tiny",
              "--config.batchsize=4")
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      "evaluate: error: the config has no field 'batchsize' (did you mean 'batch_size'?)")
  proc = _run("r2n2_jax.sweep", "--root", str(tmp_path), "--configs", "simple_gru_k1:tiny",
              "--set", "model.kernel_size=2")
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      "sweep: error: config.model.kernel_size=2: must be one of 1, 3")
  proc = _run("r2n2_jax.sweep", "--root", str(tmp_path), "--configs", "simple_gru_k1:tiny",
              "--set", "model.kernel_size=2", env={"R2N2_TRACEBACK": "1"})
  assert proc.returncode == 1 and "Traceback" in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith("sweep: error: config.model.kernel_size=2")
  assert not os.listdir(tmp_path)
