"""The XLA:CPU convolution setting is added once, never over the user's own; huge-page malloc."""

import json
import os
import subprocess
import sys

import jaxlib.version
import pytest

from r2n2_jax import cpu_flags

MEASURED = jaxlib.version.__version__.startswith(cpu_flags.MEASURED_JAXLIB)


@pytest.mark.skipif(not MEASURED, reason="the flag is only set on the measured jaxlib versions")
def test_adds_flag_to_existing_flags_once():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  assert cpu_flags.prefer_eigen_convolutions(env)
  assert env["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=2 "
                              "--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce")
  assert not cpu_flags.prefer_eigen_convolutions(env)
  assert env["XLA_FLAGS"].count("ynn_fusion_type") == 1


def test_keeps_the_users_setting():
  env = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=individual_dot"}
  assert not cpu_flags.prefer_eigen_convolutions(env)
  assert env["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=individual_dot"


def test_unmeasured_jaxlib_is_left_alone(monkeypatch):
  monkeypatch.setattr(jaxlib.version, "__version__", "0.99.0")
  env = {}
  assert not cpu_flags.prefer_eigen_convolutions(env)
  assert env == {}


PROCESS_VARS = ("XLA_FLAGS", "GLIBC_TUNABLES", "PYOPENGL_PLATFORM", "MPLBACKEND")


def _clean_env():
  return {k: v for k, v in os.environ.items() if k not in PROCESS_VARS}


@pytest.mark.slow  # A fresh Python process.
def test_library_imports_change_nothing_in_the_process(tmp_path):
  """Importing the package and its modules leaves the environment and matplotlib's backend alone."""
  script = ("import json, os, sys\n"
            "import matplotlib\n"
            "before = matplotlib.get_backend()\n"
            "import r2n2_jax, configs.default\n"
            "from r2n2_jax import evaluate, predict, report, sweep, train, visualize, input_pipeline\n"
            f"print(json.dumps([{{k: os.environ.get(k) for k in {PROCESS_VARS!r}}}, "
            "before == matplotlib.get_backend()]))\n")
  env = dict(_clean_env(), PYTHONPATH=os.pathsep.join(sys.path))
  out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True,
                       text=True, check=True)
  assert json.loads(out.stdout.splitlines()[-1]) == [{k: None for k in PROCESS_VARS}, True]


@pytest.mark.slow  # A fresh Python process.
def test_entry_point_setup_sets_the_process_up(tmp_path):
  """process_setup.setup: EGL, the XLA:CPU convolution flag (measured jaxlib) and huge pages."""
  script = ("import json, os\nfrom r2n2_jax import process_setup\n"
            "summary = process_setup.setup('test')\n"
            f"print(json.dumps([{{k: os.environ.get(k) for k in {PROCESS_VARS!r}}}, summary]))\n")
  env = dict(_clean_env(), PYTHONPATH=os.pathsep.join(sys.path))
  out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True,
                       text=True, check=True)
  values, summary = json.loads(out.stdout.splitlines()[-1])
  assert values["PYOPENGL_PLATFORM"] == "egl"
  if MEASURED:
    assert f"{cpu_flags.YNN_FLAG}={cpu_flags.YNN_FUSION_TYPES}" in values["XLA_FLAGS"]
  if cpu_flags.huge_page_malloc_environ({}) is not None:
    assert values["GLIBC_TUNABLES"] == cpu_flags.MALLOC_TUNABLE
  assert summary.startswith("test: process set-up:") and "\n" not in summary


@pytest.mark.slow  # Fresh Python processes.
@pytest.mark.skipif(not MEASURED, reason="the flag is only set on the measured jaxlib versions")
def test_warns_when_jax_started_first(tmp_path):
  """In a fresh process that uses jax before the flag is set, the late setting is reported."""
  late = "import jax; jax.devices(); from r2n2_jax import cpu_flags; cpu_flags.prefer_eigen_convolutions()"
  env = dict(_clean_env(), PYTHONPATH=os.pathsep.join(sys.path))
  out = subprocess.run([sys.executable, "-W", "always", "-c", late], env=env, cwd=tmp_path,
                       capture_output=True, text=True, check=True)
  assert "too late" in out.stderr
  early = ("from r2n2_jax import cpu_flags; cpu_flags.prefer_eigen_convolutions(); import jax; "
           "jax.devices()")
  quiet = subprocess.run([sys.executable, "-W", "always", "-c", early], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True)
  assert "too late" not in quiet.stderr


GLIBC = ("glibc", "2.36")


def test_huge_page_malloc_on_glibc_with_transparent_huge_pages():
  env = cpu_flags.huge_page_malloc_environ({"PATH": "/bin"}, libc=GLIBC, huge_pages=True)
  if sys.platform != "linux":
    assert env is None
    return
  assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


@pytest.mark.parametrize("environ, libc, huge_pages", [
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, GLIBC, True),  # The user's setting wins.
    ({}, ("glibc", "2.34"), True),  # Before the tunable existed.
    ({}, ("", ""), True),  # Not glibc (musl, ...).
    ({}, GLIBC, False),  # Kernel without transparent huge pages.
])
def test_huge_page_malloc_left_alone(environ, libc, huge_pages):
  assert cpu_flags.huge_page_malloc_environ(environ, libc=libc, huge_pages=huge_pages) is None


@pytest.mark.slow  # Fresh Python processes.
@pytest.mark.skipif(cpu_flags.huge_page_malloc_environ({}) is None,
                    reason="this machine does not qualify for huge-page malloc")
def test_entry_point_reruns_itself_with_huge_page_malloc(tmp_path):
  """A fresh process calling it is replaced by itself, same arguments, with the tunable set."""
  script = tmp_path / "entry.py"
  script.write_text("import os, sys\nfrom r2n2_jax import cpu_flags\n"
                    "cpu_flags.reexec_with_huge_page_malloc()\n"
                    "print(os.environ['GLIBC_TUNABLES'], sys.argv[1:])\n")
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  out = subprocess.run([sys.executable, str(script), "--flag", "x"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "glibc.malloc.hugetlb=1 ['--flag', 'x']"
  env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=0"
  out = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True,
                       text=True, check=True)
  assert out.stdout.strip() == "glibc.malloc.hugetlb=0 []"
