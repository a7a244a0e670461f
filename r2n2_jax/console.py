"""What an entry point prints: this project's INFO lines, and from libraries (orbax, jax, grain,
...) only warnings and errors unless --verbosity/-v is given on the command line.

Orbax logs through absl like this project (its INFO lines print whole option structs at every
save), so a logger level cannot tell them apart; a filter on the absl handler does, by file.
"""

import logging
import os

from absl import flags
from absl import logging as absl_logging

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OWN = tuple(os.path.join(_ROOT, d) + os.sep for d in ("r2n2_jax", "data_prep", "configs"))


class _OwnInfoOnly(logging.Filter):
  """Passes warnings and worse, and INFO records logged by this repository's code."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or record.pathname.startswith(_OWN) or (
        os.path.dirname(os.path.abspath(record.pathname)) == _ROOT)


def quiet_libraries():
  """Call in main() after flags are parsed; a no-op when --verbosity was given."""
  if flags.FLAGS["verbosity"].present:
    return
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _OwnInfoOnly) for f in handler.filters):
    handler.addFilter(_OwnInfoOnly())
