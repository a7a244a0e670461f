"""Reconstructs one object from your own images of it.

  python -m r2n2_jax.predict --workdir DIR --images IMG [IMG ...] --output OUT [--threshold 0.4]
      [--step N] [--timing]

Images: PNG/JPEG, any size, RGB or RGBA (or greyscale/palette). Transparent pixels get the
evaluation background (grey 240); each image is centre-cropped to a square, resized to 137 (the
rendered size) and centre-cropped to 127, exactly as evaluation frames its views. A 127x127 image
(the model's input size, e.g. the original 3D-R2N2 demo's) is taken as it is.
OUT by extension: .obj/.ply/.glb/.stl mesh (marching cubes of P(occupied) at the threshold,
Taubin-smoothed, in the unit cube [-0.5, 0.5]^3 of the data, +y up), .npy (the (32, 32, 32)
float32 probability grid), .binvox (the thresholded grid), .png (a rendering of the voxels).
"""

import argparse
import os
import time
import warnings

import jax
import numpy as np
from PIL import Image
import trimesh

from data_prep import records
from r2n2_jax import checkpoints
from r2n2_jax import cli
from r2n2_jax import input_pipeline
from r2n2_jax import metrics
from r2n2_jax import process_setup
from r2n2_jax.models import build_model

MESH_FORMATS = (".obj", ".ply", ".glb", ".stl")
OUTPUT_FORMATS = MESH_FORMATS + (".npy", ".binvox", ".png")
TIMING_RUNS = 10


def load_image(path):
  """An image file -> (H, W, 4) uint8 RGBA (opaque alpha where the file has none)."""
  try:
    with Image.open(path) as image:
      image.load()
      has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
      return np.asarray(image.convert("RGBA" if has_alpha else "RGB").convert("RGBA"))
  except FileNotFoundError:
    raise FileNotFoundError(f"{path}: no such image file") from None
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise ValueError(f"{path}: not a readable image ({e})") from None


def preprocess_image(rgba):
  """(H, W, 4) uint8 RGBA of any size -> (127, 127, 3) float32 model input in [0, 1].

  Alpha-composite on the evaluation background, centre-crop to a square, resize to 137 and
  centre-crop to 127 (the evaluation's crop of the 137 renders). A 127x127 image is already the
  model's input and is taken as it is (resizing it to 137 and cropping would rescale it).
  """
  rgb = input_pipeline.composite_background(rgba, (input_pipeline.EVAL_BACKGROUND,) * 3)
  h, w = rgb.shape[:2]
  if (h, w) == (input_pipeline.CROP,) * 2:
    return input_pipeline.to_model_input(rgb)
  side = min(h, w)
  rgb = rgb[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
  if side != records.IMAGE_SIZE:
    rgb = np.asarray(Image.fromarray(rgb).resize((records.IMAGE_SIZE,) * 2, Image.BICUBIC))
  return input_pipeline.to_model_input(input_pipeline.center_crop(rgb))


class Predictor:
  """A restored model: views (n, 127, 127, 3) float32 -> P(occupied) (32, 32, 32)."""

  def __init__(self, workdir, step=None):
    self.config = checkpoints.load_config(workdir)
    self.variables, self.step = checkpoints.restore_variables(workdir, self.config, step)
    model = build_model(self.config.model)
    self._apply = jax.jit(
        lambda v, views: metrics.occupancy_probability(model.apply(v, views, np.ones(
            views.shape[:2], bool))))

  def __call__(self, views):
    return np.asarray(self._apply(self.variables, np.asarray(views, np.float32)[None]))[0]


def voxel_grid(occupied):
  """A trimesh VoxelGrid of a (32, 32, 32) bool grid placed in the unit cube of the data."""
  resolution = occupied.shape[0]
  transform = trimesh.transformations.scale_and_translate(
      1.0 / resolution, [-0.5 + 0.5 / resolution] * 3)
  return trimesh.voxel.VoxelGrid(trimesh.voxel.encoding.DenseEncoding(occupied), transform=transform)


def write_output(probs, path, threshold=metrics.IOU_THRESHOLD):
  """Writes the probability grid (32, 32, 32) to `path` in the format its extension names."""
  ext = os.path.splitext(path)[1].lower()
  occupied = probs >= threshold
  if not occupied.any():
    warnings.warn(f"{path}: empty prediction (no P(occupied) >= {threshold}); writing an empty "
                  "result", stacklevel=2)
  if ext == ".npy":
    np.save(path, probs.astype(np.float32))
  elif ext == ".png":
    from r2n2_jax import visualize  # pylint: disable=g-import-not-at-top  (OpenGL only if needed)
    Image.fromarray(visualize.render_voxels(occupied, size=384)).save(path)
  elif ext == ".binvox":
    with open(path, "wb") as f:
      f.write(trimesh.exchange.binvox.export_binvox(voxel_grid(occupied)))
  elif ext in MESH_FORMATS:
    mesh = metrics.surface_mesh(probs, level=threshold)
    if mesh is None:
      mesh = trimesh.Trimesh()
    else:
      mesh.merge_vertices()
      trimesh.smoothing.filter_taubin(mesh, iterations=10)
    mesh.export(path)
  else:
    raise ValueError(f"{path}: unknown output format {ext!r}; use one of {', '.join(OUTPUT_FORMATS)}")


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m r2n2_jax.predict",
                                   description="Reconstructs one object from images of it.")
  parser.add_argument("--workdir", required=True, help="Training workdir (config.json, checkpoints/).")
  parser.add_argument("--images", nargs="+", required=True, help="Images of ONE object.")
  parser.add_argument("--output", required=True, help="Output file: " + ", ".join(OUTPUT_FORMATS))
  parser.add_argument("--threshold", type=float, default=metrics.IOU_THRESHOLD,
                      help="P(occupied) threshold.")
  parser.add_argument("--step", type=int, default=None, help="Checkpoint step (default: latest).")
  parser.add_argument("--timing", action="store_true",
                      help=f"Print the single-image latency (median of {TIMING_RUNS} after warm-up).")
  cli.add_verbosity_flag(parser)
  args = parser.parse_args(argv)
  cli.set_verbosity(args.verbosity)
  with cli.user_errors("predict"):
    if os.path.splitext(args.output)[1].lower() not in OUTPUT_FORMATS:
      raise ValueError(f"{args.output}: unknown output format; use one of {', '.join(OUTPUT_FORMATS)}")
    views = np.stack([preprocess_image(load_image(p)) for p in args.images])
    predictor = Predictor(args.workdir, args.step)
    probs = predictor(views)
    if args.timing:
      predictor(views[:1])  # Warm-up: compiles the 1-view shape.
      times = []
      for _ in range(TIMING_RUNS):
        start = time.perf_counter()
        predictor(views[:1])
        times.append(time.perf_counter() - start)
      print(f"single-image latency: {1000 * np.median(times):.1f} ms (median of {TIMING_RUNS}, "
            f"after warm-up)")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    write_output(probs, args.output, args.threshold)
  print(f"wrote {args.output} ({int((probs >= args.threshold).sum())} occupied voxels of 32^3, "
        f"step {predictor.step})")


if __name__ == "__main__":
  process_setup.setup("predict")  # Here, not in main(): it may re-run the process (huge pages).
  main()
