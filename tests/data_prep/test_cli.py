"""`python -m data_prep`: user errors are one `error: ...` line; the package is an import leaf."""

import json
import os
import subprocess
import sys

import pytest

from data_prep import __main__ as cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _one_error_line(capsys, *words):
  """The error is the last line of stderr (progress bars may precede it) and the only one."""
  err = capsys.readouterr().err
  assert err.endswith("\n") and err.count("error: ") == 1, err
  line = err.rstrip("\n").split("\n")[-1]
  assert line.startswith("error: "), err
  for word in words:
    assert word in line, line
  return line


def test_bad_inputs_are_one_error_line(tmp_path, capsys):
  out = str(tmp_path / "out")
  missing = str(tmp_path / "missing")
  assert cli.main(["mesh-folder", "--input", missing, "--data-dir", out, "--name", "x"]) == 1
  _one_error_line(capsys, missing, "no mesh files")
  assert cli.main(["future3d", "--input", missing, "--data-dir", out]) == 1
  _one_error_line(capsys, "model_info.json")
  assert cli.main(["shapenet", "--rendering-dir", missing, "--voxel-dir", missing,
                   "--data-dir", out]) == 1
  _one_error_line(capsys, "not a directory", missing)
  (tmp_path / "r").mkdir()
  split = tmp_path / "split.json"
  split.write_text(json.dumps({"not": "a list"}))
  assert cli.main(["shapenet", "--rendering-dir", str(tmp_path / "r"), "--voxel-dir",
                   str(tmp_path / "r"), "--data-dir", out, "--split", str(split)]) == 1
  _one_error_line(capsys, str(split), "expected a list")
  broken = tmp_path / "broken"
  broken.mkdir()
  (broken / "a.stl").write_bytes(b"")
  (broken / "b.obj").write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
  assert cli.main(["mesh-folder", "--input", str(broken), "--data-dir", out, "--name", "none",
                   "--views", "2", "--workers", "1"]) == 1
  # The full report goes to stdout; the error line names the first reasons and the report file.
  _one_error_line(capsys, "no usable inputs", "a.stl: empty file", "zero surface area",
                  "prep_report.txt")


def test_bad_flags_exit_2(tmp_path, capsys):
  argv = ["mesh-folder", "--input", str(tmp_path), "--data-dir", str(tmp_path), "--name", "x"]
  for extra, message in ((["--runner=FlinkRunner"], "Beam options need --beam"),
                         (["--workers", "0"], "must be at least 1"),
                         (["--view", "3"], "unrecognized arguments: --view")):
    with pytest.raises(SystemExit) as e:
      cli.main(argv + extra)
    assert e.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]


def test_beam_without_apache_beam_is_one_error_line(tmp_path, capsys):
  try:
    import apache_beam  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
    pytest.skip("apache-beam is installed here")
  except ImportError:
    pass
  assert cli.main(["mesh-folder", "--input", str(tmp_path), "--data-dir", str(tmp_path),
                   "--name", "x", "--beam"]) == 1
  _one_error_line(capsys, "pip install -e '.[beam]'")


@pytest.mark.slow  # A fresh Python process.
def test_importing_data_prep_sets_nothing_and_does_not_import_r2n2_jax():
  code = (
      "import os, sys\n"
      "names = ('PYOPENGL_PLATFORM', 'LP_NUM_THREADS')\n"
      "for name in names: os.environ.pop(name, None)\n"
      "import data_prep.__main__, data_prep.framing, data_prep.future3d, data_prep.mesh_folder\n"
      "import data_prep.pipeline, data_prep.procedural, data_prep.render, data_prep.shapenet\n"
      "print([n for n in names if n in os.environ],\n"
      "      sorted({m.split('.')[0] for m in sys.modules}\n"
      "             & {'r2n2_jax', 'pyrender', 'OpenGL'}))\n")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=ROOT, check=True)
  assert result.stdout.strip() == "[] []", result.stdout
