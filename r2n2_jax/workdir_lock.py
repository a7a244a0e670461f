"""One training per workdir: an exclusive flock on WORKDIR/train.lock, which records its holder.

The kernel drops a flock when its process dies, even by SIGKILL, so a killed run never leaves a
stale lock; the host and pid written into the file only serve the message of a refused start.
Multi-process runs (jax.distributed) take the lock on process 0 only. flock works on local file
systems and on NFSv4 (as an fcntl lock); where the file system refuses locks the run goes on with
a warning.
"""

import errno
import fcntl
import json
import os
import socket
import time

from absl import logging

from r2n2_jax import cli

LOCK_FILE = "train.lock"


class WorkdirLockedError(cli.UserError):
  """Another training holds the workdir."""


class WorkdirLock:
  """Holds WORKDIR/train.lock from `acquire` until `release` (or the process's end)."""

  def __init__(self, workdir):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._file = None

  def acquire(self):
    f = open(self.path, "a+")  # Not "w": truncating would erase the holder's record.
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        f.close()
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
          logging.warning("%s: the file system does not support locks (%s); not guarding the "
                          "workdir against a second training", self.path, e)
          return self
        raise
      f.seek(0)
      holder = f.read().strip()
      f.close()
      raise WorkdirLockedError(f"{os.path.dirname(self.path)} is in use by another training "
                               f"({describe(holder)}); stop it or use another --workdir") from None
    f.seek(0)
    f.truncate()
    json.dump({"host": socket.gethostname(), "pid": os.getpid(),
               "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}, f)
    f.flush()
    self._file = f
    return self

  def release(self):
    if self._file is not None:
      self._file.close()  # Closing drops the flock; the file stays (harmless, overwritten next time).
      self._file = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def describe(holder_text):
  """'host H, pid P, since T' from the lock file's JSON (or its raw text)."""
  try:
    holder = json.loads(holder_text)
    return f"host {holder['host']}, pid {holder['pid']}, since {holder['since']}"
  except (ValueError, KeyError, TypeError):
    return f"holder {holder_text!r}" if holder_text else "holder unknown"
