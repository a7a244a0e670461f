"""The workdir lock against a real second process, and after a real SIGKILL of its holder."""

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from r2n2_jax import workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _holder(workdir):
  """A separate Python process that takes the lock and waits; returns it once it holds it."""
  code = textwrap.dedent(f"""
      import sys, time
      from r2n2_jax import workdir_lock
      lock = workdir_lock.WorkdirLock({str(workdir)!r}).acquire()  # Held while referenced.
      print("locked", flush=True)
      time.sleep(600)
  """)
  proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT})
  assert proc.stdout.readline().strip() == "locked"
  return proc


def test_a_second_holder_is_refused_naming_the_first_and_a_killed_one_does_not_block(tmp_path):
  proc = _holder(tmp_path)
  try:
    with pytest.raises(workdir_lock.WorkdirLockedError) as error:
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
    message = str(error.value)
    assert "\n" not in message and str(tmp_path) in message
    assert f"host {socket.gethostname()}, pid {proc.pid}" in message
  finally:
    os.kill(proc.pid, signal.SIGKILL)  # No chance to clean up: the kernel drops the flock.
    proc.wait()
  with workdir_lock.WorkdirLock(str(tmp_path)):
    with open(tmp_path / workdir_lock.LOCK_FILE) as f:
      assert f'"pid": {os.getpid()}' in f.read()
  workdir_lock.WorkdirLock(str(tmp_path)).acquire().release()  # Released on exit.
