"""Test setup shared by every test: 2 fake CPU devices, headless EGL, a persistent compile cache,
XLA's optimisation passes off.

The environment is set before anything imports jax, so `jax.device_count() == 2` in every test.
"""

import os
import tempfile

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=2").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
# Identical programs compiled by several tests (and their launch.py subprocesses) compile once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "r2n2_jax_test_compile_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# On a cold cache (CI) XLA:CPU compiling is most of the suite: without its optimisation passes
# tests/models/test_r2n2.py + test_train.py + test_decoders.py took 250 s instead of 386 s (a
# narrow train step compiles in 6.6 s instead of 11.6 s, runs in 0.27 s instead of 0.13 s). The
# tests compare programs with each other or with references, not speeds. Subprocesses inherit
# it; JAX_DISABLE_MOST_OPTIMIZATIONS=0 runs the suite on optimised programs.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import pytest  # noqa: E402

from r2n2_jax import cpu_flags  # noqa: E402

# What the entry points' process_setup does for XLA:CPU (library imports no longer do it): Eigen
# convolutions keep the suite as fast as the programs users run.
cpu_flags.prefer_eigen_convolutions()

from configs import default  # noqa: E402


def pytest_collection_modifyitems(config, items):
  """Tests on the rendered `tiny_config` dataset are slow (EGL rendering): not in the fast tier."""
  del config
  for item in items:
    if "tiny_config" in getattr(item, "fixturenames", ()):
      item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
  """The `:tiny` config with its procedural dataset built once per session in a temp data_dir."""
  from r2n2_jax import train

  config = default.get_config("tiny")
  config.data_dir = str(tmp_path_factory.mktemp("data"))
  train.prepare_dataset(config)  # Builds it.
  return config
