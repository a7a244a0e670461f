"""SIGTERM (what SLURM and Kubernetes send before killing a preempted job) and Ctrl-C during
training: a request to stop after a step that every process agrees on, checkpointed.

Under jax.distributed, JAX's preemption notifier owns SIGTERM and its coordination service picks
the step (`multihost_utils.reached_preemption_sync_point`, to be asked at every step); Ctrl-C is
forwarded to it as a SIGTERM. A single process records the signal itself.
"""

import signal
import threading

from absl import logging
import jax
from jax.experimental import multihost_utils


class Interrupted(Exception):
  """Training stopped at a signal after checkpointing `step`; `exit_code` is 128 + the signal."""

  def __init__(self, signum, step):
    name = signal.Signals(signum).name
    super().__init__(f"{name}: stopped after step {step}, checkpoint saved")
    self.signum, self.step, self.exit_code = signum, step, 128 + signum


class StopOnSignal:
  """Context manager: while active, SIGTERM/SIGINT ask to stop; `should_stop(step)` after each step.

  Outside it the usual behaviour holds (SIGTERM ends the process, Ctrl-C raises
  KeyboardInterrupt), so a signal during the data build or the restore stops at once.
  """

  def __init__(self):
    self.signum = None
    self._previous = {}
    self._sync = jax.distributed.is_initialized()

  def __enter__(self):
    if threading.current_thread() is not threading.main_thread():
      logging.warning("Training outside the main thread: SIGTERM/Ctrl-C are not intercepted")
      return self
    if self._sync:
      if not jax.config.jax_enable_preemption_service:
        logging.warning("jax_enable_preemption_service is off: SIGTERM ends the run without a "
                        "checkpoint")
        self._sync = False
        return self
      self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._forward_to_notifier)
    else:
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._record)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def _record(self, signum, frame):
    del frame
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # A second Ctrl-C: stop now, without a checkpoint.
    if self.signum is None:
      logging.warning("%s received: finishing the current step, then checkpointing and exiting "
                      "(Ctrl-C again: exit at once)", signal.Signals(signum).name)
      self.signum = signum

  def _forward_to_notifier(self, signum, frame):
    self._record(signum, frame)
    signal.raise_signal(signal.SIGTERM)  # JAX's notifier tells the other processes.

  def should_stop(self, step):
    """True once, at the step where every process stops (call it after every step)."""
    if self._sync:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signum = self.signum or signal.SIGTERM
        return True
      return False
    return self.signum is not None
