"""launch.py end to end on 2 fake devices: checkpoints, TensorBoard events, exact resume, what
it prints."""

import glob
import os
import re
import subprocess
import sys

import jax
import numpy as np

from r2n2_jax import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(workdir, data_dir, steps, *overrides):
  """Runs launch.py on the tiny narrow config (exact resume does not depend on the width; the
  paper's widths train in test_import_weights' fine-tuning test); returns its combined output."""
  cmd = [sys.executable, os.path.join(ROOT, "launch.py"),
         "--config", os.path.join(ROOT, "configs/simple_gru_k1.py") + ":tiny,narrow",
         "--workdir", str(workdir), f"--config.data_dir={data_dir}",
         f"--config.num_train_steps={steps}", "--config.checkpoint_every_steps=2",
         "--config.eval_every_steps=100", "--config.log_every_steps=1", *overrides]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  return result.stderr + result.stdout


def _params(workdir, step):
  config = checkpoints.load_config(workdir)
  variables, restored_step = checkpoints.restore_variables(workdir, config, step)
  assert restored_step == step
  return jax.tree.leaves(variables)


def test_launch_trains_on_two_devices_and_resumes_exactly(tiny_config, tmp_path):
  interrupted, straight = tmp_path / "interrupted", tmp_path / "straight"
  out = _launch(interrupted, tiny_config.data_dir, 2)
  assert "TFRT_CPU_1" in out or "CpuDevice(id=1)" in out  # Both fake devices were used.
  assert "JAX process 0 of 1 (single process): 2 local CPU device(s)" in out
  assert "progress: step 1/2, first step" in out
  # INFO lines come from this repository only (orbax's print option structs at every save).
  own = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "*", "*.py"))} | {"launch.py"}
  info_files = set(re.findall(r"^I\d{4} [\d:.]+ +\d+ ([\w.]+):\d+\]", out, re.M))
  assert info_files and info_files <= own, info_files - own
  assert sorted(os.listdir(interrupted / "checkpoints")) == ["2"]
  assert glob.glob(str(interrupted / "events.out.tfevents.*"))

  out = _launch(interrupted, tiny_config.data_dir, 3)
  assert "Resumed from" in out and "at step 2" in out
  assert sorted(os.listdir(interrupted / "checkpoints")) == ["2", "3"]

  _launch(straight, tiny_config.data_dir, 3)
  for a, b in zip(_params(interrupted, 3), _params(straight, 3)):
    np.testing.assert_array_equal(a, b)
  # Resuming started from step 2's state: the step-2 and step-3 parameters differ.
  assert any(not np.array_equal(a, b) for a, b in zip(_params(interrupted, 2),
                                                       _params(interrupted, 3)))
