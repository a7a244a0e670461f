"""Error policy of the entry points (launch, evaluate, predict, sweep, data_prep).

A user error (a bad config, path, checkpoint or dataset; a workdir in use) prints ONE line,
`<program>: error: <message>`, and exits with status 1. Anything else is a bug and keeps its
traceback. `--verbosity=1` (absl's flag; predict and sweep take it too) or R2N2_TRACEBACK=1 prints
the traceback of user errors as well.
"""

import contextlib
import os
import sys
import traceback

from absl import logging

from r2n2_jax import preemption

TRACEBACK_ENV = "R2N2_TRACEBACK"


class UserError(Exception):
  """An error whose message tells the user what to fix; no traceback needed."""


# ValueError/OSError/KeyError: what config, file and data checks raise throughout the code base
# (config_lib.ConfigError, checkpoints.CheckpointError and records.DamagedRecordError are
# ValueErrors; FileNotFoundError is an OSError). FloatingPointError: a diverged run
# (train.NonFiniteLossError), whose message names the step range; nothing is left to show.
USER_ERRORS = (UserError, ValueError, OSError, KeyError, FloatingPointError)


def one_line(error):
  """The first line of an exception's message (a KeyError's key without its quotes)."""
  text = error.args[0] if isinstance(error, KeyError) and error.args else error
  text = str(text).strip()
  return text.splitlines()[0] if text else type(error).__name__


def show_tracebacks():
  return os.environ.get(TRACEBACK_ENV, "") not in ("", "0") or logging.get_verbosity() >= 1


def exit_with_error(program, error):
  """Exits with status 1 and `program: error: <first line of error>` on stderr."""
  if show_tracebacks() and isinstance(error, BaseException):
    traceback.print_exception(error)
  message = one_line(error) if isinstance(error, BaseException) else str(error)
  sys.stderr.flush()
  sys.exit(f"{program}: error: {message}")


@contextlib.contextmanager
def user_errors(program):
  """Turns USER_ERRORS raised inside into exit_with_error(program, ...), and a run stopped by a
  signal after its checkpoint (preemption.Interrupted) into exit status 128 + the signal."""
  try:
    yield
  except preemption.Interrupted as e:
    logging.warning("%s: exiting with status %d (%s); the same command resumes", program,
                    e.exit_code, e)
    logging.flush()
    sys.exit(e.exit_code)
  except USER_ERRORS as e:
    exit_with_error(program, e)


def add_verbosity_flag(parser):
  """argparse twin of absl's --verbosity (1 also prints the traceback of user errors)."""
  parser.add_argument("--verbosity", "-v", type=int, default=0,
                      help=f"1: debug logging and tracebacks of user errors (or {TRACEBACK_ENV}=1).")


def set_verbosity(level):
  logging.set_verbosity(logging.DEBUG if level >= 1 else logging.INFO)
