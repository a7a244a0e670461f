"""predict: own images (RGBA, RGB, odd sizes) -> probability grid -> mesh/npy/binvox/png files."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import trimesh

from configs import default
from r2n2_jax import checkpoints
from r2n2_jax import input_pipeline
from r2n2_jax import predict
import synthetic  # pylint: disable=g-bad-import-order  (tests/synthetic.py)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir with config.json and an (untrained) step-1 checkpoint."""
  return synthetic.write_workdir(str(tmp_path_factory.mktemp("predict_run")),
                                 default.get_config("tiny,narrow"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  """An RGBA PNG (137), an RGB JPEG (200x300) and a greyscale PNG (64x50) of an object."""
  root = tmp_path_factory.mktemp("images")
  rgba = np.zeros((137, 137, 4), np.uint8)
  rgba[30:110, 40:100] = (200, 60, 40, 255)
  Image.fromarray(rgba).save(root / "a.png")
  rgb = np.full((200, 300, 3), 240, np.uint8)
  rgb[50:150, 100:200] = (60, 90, 200)
  Image.fromarray(rgb).save(root / "b.jpg", quality=95)
  grey = np.full((64, 50), 240, np.uint8)
  grey[20:40, 15:35] = 30
  Image.fromarray(grey).save(root / "c.png")
  return [str(root / n) for n in ("a.png", "b.jpg", "c.png")]


def test_transparent_pixels_get_the_evaluation_background():
  rgba = np.zeros((137, 137, 4), np.uint8)
  rgba[..., 0] = 255  # Red, but fully transparent.
  view = predict.preprocess_image(rgba)
  assert view.shape == (127, 127, 3) and view.dtype == np.float32
  np.testing.assert_allclose(view, input_pipeline.EVAL_BACKGROUND / 255.0)


def test_137_images_are_framed_exactly_as_evaluation_frames_renders():
  rgba = np.random.default_rng(0).integers(0, 256, (137, 137, 4), dtype=np.uint8)
  expected = input_pipeline.preprocess_eval_views(rgba[None], [0])[0]
  np.testing.assert_array_equal(predict.preprocess_image(rgba), expected)


def test_odd_sizes_are_centre_cropped_to_a_square_and_resized():
  rgb = np.zeros((100, 300, 4), np.uint8)
  rgb[..., 3] = 255
  rgb[:, 100:200, :3] = 255  # The central square is white, the sides black.
  view = predict.preprocess_image(rgb)
  assert view.shape == (127, 127, 3)
  np.testing.assert_allclose(view, 1.0, atol=1e-6)


@pytest.mark.parametrize("path,problem", [("missing.png", "no such image"),
                                          ("broken.png", "not a readable image")])
def test_bad_images_are_one_line_errors(tmp_path, path, problem):
  (tmp_path / "broken.png").write_text("not an image")
  with pytest.raises((FileNotFoundError, ValueError), match=problem):
    predict.load_image(str(tmp_path / path))


def test_predicts_from_rgba_rgb_and_odd_sized_images(workdir, images, tmp_path):
  predict.main(["--workdir", workdir, "--images", *images, "--output", str(tmp_path / "p.npy")])
  probs = np.load(tmp_path / "p.npy")
  assert probs.shape == (32, 32, 32) and probs.dtype == np.float32
  assert np.all((probs >= 0) & (probs <= 1))
  views = np.stack([predict.preprocess_image(predict.load_image(p)) for p in images])
  np.testing.assert_allclose(probs, predict.Predictor(workdir)(views), atol=1e-6)


def _ball(radius=9.0):
  i = np.arange(32) - 15.5
  return (np.sqrt(i[:, None, None] ** 2 + i[None, :, None] ** 2 + i[None, None, :] ** 2)
          < radius).astype(np.float32) * 0.8 + 0.1


@pytest.mark.parametrize("ext", [".obj", ".ply", ".glb", ".stl"])
def test_mesh_outputs_are_closed_surfaces_in_the_unit_cube(tmp_path, ext):
  path = str(tmp_path / f"ball{ext}")
  predict.write_output(_ball(), path)
  mesh = trimesh.load(path, force="mesh")
  assert mesh.is_watertight
  # A ball of radius 9 voxels = 9/32 of the unit cube, centred at the origin.
  np.testing.assert_allclose(mesh.bounds, [[-9 / 32] * 3, [9 / 32] * 3], atol=0.03)


def test_binvox_npy_and_png_outputs(tmp_path):
  probs = _ball()
  predict.write_output(probs, str(tmp_path / "b.binvox"))
  grid = trimesh.load(str(tmp_path / "b.binvox"))
  np.testing.assert_array_equal(grid.matrix, probs >= 0.4)
  # Cell (i, j, k) is centred at -0.5 + (ijk + 0.5) / 32, as in the records.
  np.testing.assert_allclose(grid.transform, trimesh.transformations.scale_and_translate(
      1 / 32, [-0.5 + 0.5 / 32] * 3))
  predict.write_output(probs, str(tmp_path / "b.png"))
  picture = np.asarray(Image.open(tmp_path / "b.png"))
  assert picture.shape[-1] == 3 and picture.std() > 0


@pytest.mark.parametrize("ext", [".obj", ".ply", ".glb", ".stl", ".binvox", ".npy", ".png"])
def test_empty_prediction_writes_a_file_and_warns(tmp_path, ext):
  path = str(tmp_path / f"empty{ext}")
  with pytest.warns(UserWarning, match="empty prediction"):
    predict.write_output(np.full((32, 32, 32), 0.1, np.float32), path)
  assert os.path.getsize(path) > 0


@pytest.mark.slow  # A fresh Python process.
def test_bad_inputs_exit_with_one_line_and_no_traceback(workdir, images, tmp_path):
  bad_cell, bad_kernel = tmp_path / "bad_cell", tmp_path / "bad_kernel"
  for path, field, value in ((bad_cell, "cell", "transformer"), (bad_kernel, "kernel_size", 1)):
    shutil.copytree(workdir, path)  # The checkpoint with a config.json that does not match it.
    config = json.loads((path / "config.json").read_text())
    config["model"][field] = value
    (path / "config.json").write_text(json.dumps(config))
  no_checkpoint = tmp_path / "empty"
  no_checkpoint.mkdir()
  checkpoints.save_config(str(no_checkpoint), default.get_config("tiny,narrow"))
  cases = [
      (["--workdir", workdir, "--images", "nope.png"], "nope.png: no such image file"),
      (["--workdir", str(no_checkpoint), "--images", images[0]], "no checkpoint"),
      (["--workdir", str(bad_cell), "--images", images[0]], "does not describe a loadable model for its checkpoint"),
      (["--workdir", str(bad_kernel), "--images", images[0]], "does not describe a loadable model for its checkpoint"),
      (["--workdir", str(tmp_path), "--images", images[0]], "config.json"),
  ]
  for args, message in cases:
    proc = subprocess.run([sys.executable, "-m", "r2n2_jax.predict", *args, "--output",
                           str(tmp_path / "x.obj")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]
