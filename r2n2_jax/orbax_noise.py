"""Orbax's noise when a save fails (a full disk), cut to the one line `checkpoints.save` raises.

A failed save makes orbax's background threads log their tracebacks (4 with a full disk) and
tensorstore print dozens of "Event loop is closed" tracebacks straight to stderr. Both say nothing
the save's own error does not; `--verbosity=1` or R2N2_TRACEBACK=1 keeps them. This is a
workaround at the wrong depth (the cause is orbax closing its event loop while writes are in
flight): remove it once orbax stops printing them.
"""

import contextlib
import sys

from absl import logging

from r2n2_jax import cli


class _NoOrbaxTracebacks(logging.logging.Filter):
  """Drops the tracebacks orbax's background threads log with a failed save or restore (a full
  disk logs 4); the error still reaches `save`/`restore`, which say it in one line."""

  def filter(self, record):
    if "/orbax/" in record.pathname and not cli.show_tracebacks():
      record.exc_info, record.exc_text = None, None
    return True


_FILTER = _NoOrbaxTracebacks()


def drop_orbax_thread_tracebacks():
  """Installs the filter on absl's logger (once)."""
  if _FILTER not in logging.get_absl_logger().filters:
    logging.get_absl_logger().addFilter(_FILTER)


class _DropClosedLoopTracebacks:
  """sys.stderr minus the "RuntimeError: Event loop is closed" tracebacks.

  When one array of a save fails (a full disk), orbax closes its event loop while the writes of
  the other arrays are still in flight; each of them then completes into the closed loop and
  tensorstore prints its traceback with PyErr_Print (dozens, measured 47 with a full disk,
  sys.excepthook is not consulted). They say nothing the save's own error does not.
  """

  MARK = "Traceback (most recent call last):\n"

  def __init__(self, stream):
    self._stream, self._pending, self._block = stream, "", None

  def write(self, text):
    self._pending += text
    while "\n" in self._pending:
      line, self._pending = self._pending.split("\n", 1)
      self._line(line + "\n")
    return len(text)

  def _line(self, line):
    if self._block is None:
      if line == self.MARK:
        self._block = [line]
      else:
        self._stream.write(line)
      return
    self._block.append(line)
    if not line.startswith(" "):  # The exception line ends the traceback.
      if line.strip() != "RuntimeError: Event loop is closed":
        self._stream.write("".join(self._block))
      self._block = None

  def close_filter(self):
    self._stream.write("".join(self._block or []) + self._pending)
    self._stream.flush()

  def __getattr__(self, name):
    return getattr(self._stream, name)


@contextlib.contextmanager
def quiet_closed_loop_tracebacks():
  """Within: sys.stderr without tensorstore's "Event loop is closed" tracebacks (unless
  tracebacks were asked for)."""
  if cli.show_tracebacks():
    yield
    return
  original = sys.stderr
  sys.stderr = _DropClosedLoopTracebacks(original)
  try:
    yield
  finally:
    sys.stderr.close_filter()
    sys.stderr = original
