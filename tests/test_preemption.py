"""Training as clusters run it: real SIGTERM / Ctrl-C to real launch.py processes, and two real
processes on 127.0.0.1 (one CPU device each, jax.distributed) evaluating unequal shards,
checkpointing, stopping at one agreed step and resuming. Every run is compared with one
uninterrupted single-process run (2 devices) of the same config: same global batches, so the
parameters and the validation metrics must come out equal."""

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from r2n2_jax import checkpoints

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6


def _command(workdir, data_dir):
  # eval_batch_size 6 over the 4 validation objects: with 2 processes, process 0 holds 3 real
  # examples and process 1 one real example and 2 padding slots.
  return [sys.executable, os.path.join(ROOT, "launch.py"),
          "--config", os.path.join(ROOT, "configs/simple_gru_k1.py") + ":tiny,narrow",
          "--workdir", str(workdir), f"--config.data_dir={data_dir}",
          f"--config.num_train_steps={STEPS}", "--config.log_every_steps=1",
          "--config.eval_every_steps=3", "--config.checkpoint_every_steps=100",
          "--config.eval_batch_size=6", "--config.num_eval_batches=-1"]


_STARTED = []  # Every process started here, killed at the end if a failed test left it running.


@pytest.fixture(autouse=True, scope="module")
def _kill_leftovers():
  yield
  for proc in _STARTED:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


class _Run:
  """A launch.py process whose combined output is read as it comes."""

  def __init__(self, command, devices, **env):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **env)
    self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    _STARTED.append(self.proc)
    self.lines, self._queue = [], queue.Queue()
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.proc.stdout:
      self._queue.put(line)
    self._queue.put(None)

  def wait_for(self, pattern, timeout=600):
    """Blocks until a line matches `pattern` (a regex); fails if the process ends first."""
    while True:
      line = self._queue.get(timeout=timeout)
      if line is None:
        pytest.fail(f"process ended before {pattern!r}:\n{''.join(self.lines)[-4000:]}")
      self.lines.append(line)
      if re.search(pattern, line):
        return line

  def finish(self, timeout=600):
    """(return code, whole output)."""
    self.proc.wait(timeout=timeout)
    self._reader.join(timeout=60)
    while not self._queue.empty():
      line = self._queue.get_nowait()
      self.lines.append(line or "")
    return self.proc.returncode, "".join(self.lines)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _two_processes(command):
  env = dict(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}", JAX_NUM_PROCESSES="2")
  return [_Run(command, 1, JAX_PROCESS_ID=str(i), **env) for i in range(2)]


def _params(workdir, step):
  variables, _ = checkpoints.restore_variables(workdir, checkpoints.load_config(workdir), step)
  return [np.asarray(x) for x in jax.tree.leaves(variables)]


def _assert_same_params(workdir_a, workdir_b, step):
  for a, b in zip(_params(workdir_a, step), _params(workdir_b, step)):
    np.testing.assert_array_equal(a, b)


def _eval_line(output, step):
  match = re.search(rf"step {step}: (eval/loss=\S+ eval/iou_0\.4=\S+)", output.replace(",", ""))
  return match.group(1)


def _stop_step(output, signame):
  match = re.search(rf"Stopped by {signame} after step (\d+); checkpoint saved", output)
  assert match, output[-4000:]
  return int(match.group(1))


@pytest.fixture(scope="module")
def straight(tiny_config, tmp_path_factory):
  """An uninterrupted single-process run: (workdir, output)."""
  workdir = tmp_path_factory.mktemp("straight")
  code, output = _Run(_command(workdir, tiny_config.data_dir), 2).finish()
  assert code == 0, output[-4000:]
  return workdir, output


def test_sigterm_checkpoints_the_step_in_flight_and_the_run_resumes_exactly(
    tiny_config, straight, tmp_path):
  command = _command(tmp_path, tiny_config.data_dir)
  run = _Run(command, 2)
  run.wait_for(r"step 1: train/loss")
  run.proc.send_signal(signal.SIGTERM)
  code, output = run.finish()
  assert code == 128 + signal.SIGTERM, output[-4000:]
  step = _stop_step(output, "SIGTERM")
  assert 1 < step < STEPS
  assert os.listdir(tmp_path / "checkpoints") == [str(step)]

  code, output = _Run(command, 2).finish()
  assert code == 0, output[-4000:]
  assert f"at step {step}" in output
  _assert_same_params(straight[0], tmp_path, STEPS)


def test_two_processes_stop_together_evaluate_unequal_shards_and_resume(
    tiny_config, straight, tmp_path):
  command = _command(tmp_path, tiny_config.data_dir)
  runs = _two_processes(command)
  assert "JAX process 1 of 2" in runs[1].wait_for(r"JAX process \d of \d")
  runs[1].wait_for(r"step 1: train/loss")
  runs[1].proc.send_signal(signal.SIGINT)  # Ctrl-C in one process only: both must stop.
  (code0, out0), (code1, out1) = [run.finish() for run in runs]
  assert code0 == 128 + signal.SIGTERM, out0[-4000:]  # Told by process 1, through JAX.
  assert code1 == 128 + signal.SIGINT, out1[-4000:]
  step = _stop_step(out0, "SIGTERM")
  assert _stop_step(out1, "SIGINT") == step and 1 < step < STEPS
  assert os.listdir(tmp_path / "checkpoints") == [str(step)]

  (code0, out0), (code1, out1) = [run.finish() for run in _two_processes(command)]
  assert code0 == 0 and code1 == 0, (out0 + out1)[-4000:]
  assert f"at step {step}" in out0 and f"at step {step}" in out1
  # The same global batches as one process: equal parameters and validation metrics.
  _assert_same_params(straight[0], tmp_path, STEPS)
  assert _eval_line(out0, STEPS) == _eval_line(straight[1], STEPS)
