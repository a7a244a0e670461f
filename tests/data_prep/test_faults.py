"""Real faults of real `python -m data_prep` processes: SIGKILL mid-build, two concurrent builds."""

import glob
import os
import signal
import subprocess
import sys
import time

import pytest

from data_prep import pipeline, procedural, records

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


def _start(tmp_path, tag, data_dir, num_objects, workers, views=2):
  """`python -m data_prep procedural ...` in the background; output to files (no pipe to fill)."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
  out, err = open(tmp_path / f"{tag}.out", "w"), open(tmp_path / f"{tag}.err", "w")
  process = subprocess.Popen(
      [sys.executable, "-m", "data_prep", "procedural", "--data-dir", str(data_dir),
       "--num-objects", str(num_objects), "--views", str(views), "--workers", str(workers)],
      stdout=out, stderr=err, env=env, cwd=ROOT)
  out.close()
  err.close()
  return process


def _processes():
  """{pid: (ppid, state)} of every process, from /proc."""
  table = {}
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as f:
          stat = f.read()
      except OSError:  # Gone meanwhile.
        continue
      state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
      table[int(entry)] = (int(ppid), state)
  return table


def _workers(pid):
  """Live pool workers (spawned multiprocessing children) of process pid."""
  found = []
  for child, (ppid, state) in _processes().items():
    if ppid == pid and state not in "ZX":
      try:
        with open(f"/proc/{child}/cmdline", "rb") as f:
          if b"spawn_main" in f.read():
            found.append(child)
      except OSError:
        continue
  return found


def _alive(pid):
  entry = _processes().get(pid)
  return entry is not None and entry[1] not in "ZX"  # A zombie has exited.


def _wait_for(condition, timeout, what):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    value = condition()
    if value:
      return value
    time.sleep(0.005)
  raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _incomplete(config_dir):
  return glob.glob(os.path.join(config_dir, "incomplete.*"))


def test_sigkill_mid_write_kills_workers_and_the_next_run_cleans_up(tmp_path):
  data_dir = tmp_path / "data"
  config_dir = data_dir / procedural.DATASET_NAME / "n8_v2_s0"
  build = _start(tmp_path, "killed", data_dir, 8, workers=2)
  try:
    # TFDS writes into incomplete.XXXXXX_1.0.0 while the workers still render (objects stream
    # to the writer): kill the build then, with its workers busy.
    _wait_for(lambda: _incomplete(config_dir) and len(_workers(build.pid)) == 2, 300,
              "the build to write with 2 workers")
    workers = _workers(build.pid)
    os.kill(build.pid, signal.SIGKILL)
    build.wait()
  finally:
    if build.poll() is None:
      build.kill()
  try:
    _wait_for(lambda: not any(_alive(w) for w in workers), 5, f"workers {workers} to die")
  finally:  # Not left running by a failure.
    for w in workers:
      if _alive(w):
        os.kill(w, signal.SIGKILL)
  stale = _incomplete(config_dir)
  assert stale, "the kill left no incomplete.* folder"
  assert not os.path.exists(config_dir / records.VERSION)

  rerun = _start(tmp_path, "rerun", data_dir, 8, workers=2)
  assert rerun.wait(timeout=300) == 0, (tmp_path / "rerun.err").read_text()
  assert not _incomplete(config_dir)
  dataset_dir = pipeline.existing_dataset(data_dir, procedural.DATASET_NAME, "n8_v2_s0")
  assert dataset_dir and "Dataset written to" in (tmp_path / "rerun.out").read_text()
  assert sum(len(records.load_split(dataset_dir, s)) for s in records.SPLITS) == 8


def test_a_concurrent_build_waits_for_the_first_and_reuses_it(tmp_path):
  data_dir = tmp_path / "data"
  config_dir = data_dir / procedural.DATASET_NAME / "n30_v2_s0"
  first = _start(tmp_path, "first", data_dir, 30, workers=1)
  second = None
  try:
    writing = _wait_for(lambda: _incomplete(config_dir), 300, "the first build to write")
    # Paused mid-write (a real SIGSTOP), the first build holds its lock for as long as the second
    # needs to reach it, however fast the machine writes 30 objects.
    first.send_signal(signal.SIGSTOP)
    second = _start(tmp_path, "second", data_dir, 30, workers=1)
    # The second build waits on the lock; the first one's incomplete folder is not "stale".
    _wait_for(lambda: "Waiting for another build" in (tmp_path / "second.err").read_text(), 120,
              "the second build to reach the lock")
    assert all(os.path.exists(p) for p in writing)
    first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, (tmp_path / "first.err").read_text()
    assert second.wait(timeout=300) == 0, (tmp_path / "second.err").read_text()
  finally:
    for p in (first, second):
      if p is not None and p.poll() is None:
        p.kill()  # SIGKILL ends a stopped process too.
  dataset_dir = pipeline.existing_dataset(data_dir, procedural.DATASET_NAME, "n30_v2_s0")
  with open(os.path.join(dataset_dir, pipeline.REPORT_NAME)) as f:
    report = f.read()
  assert report in (tmp_path / "first.out").read_text()
  assert (tmp_path / "second.out").read_text().startswith(report)  # Reused, not rebuilt.
  assert not _incomplete(config_dir)
