"""Command line: `python -m data_prep <source> ...` builds a TFDS dataset of records.

  python -m data_prep procedural --data-dir OUT [--num-objects N] [--views V] [--seed S]
  python -m data_prep mesh-folder --input DIR --data-dir OUT --name NAME [--views V]
                                  [--split-seed S]
  python -m data_prep future3d --input DIR --data-dir OUT [--views V]
  python -m data_prep shapenet --rendering-dir R --voxel-dir V --data-dir OUT
                               [--split r2n2|JSON] [--classes ...]
Every source takes --workers N (default: all cores); the rendering sources take --beam to run in
TFDS's Apache Beam pipeline (DirectRunner by default). Prints the preparation report and the
training flags for the dataset (its path and the views' per-channel mean/std); exits 0 when
the dataset was written (bad inputs are skipped and listed), 1 when nothing usable remained.
"""

import argparse
import sys


def _parser():
  parser = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="source", required=True)

  def add(name, help_text, views=True):
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--data-dir", required=True, help="Output TFDS data directory.")
    p.add_argument("--workers", type=int, default=None, help="Processes (default: all cores).")
    if views:
      p.add_argument("--views", type=int, default=24, help="Rendered views per object.")
      p.add_argument("--beam", action="store_true",
                     help="Prepare objects in TFDS's Apache Beam pipeline (needs apache-beam).")
    return p

  p = add("procedural", "The embedded procedural furniture dataset.")
  p.add_argument("--num-objects", type=int, default=2000)
  p.add_argument("--seed", type=int, default=0, help="Shapes, views and splits.")
  p = add("mesh-folder", "Every .obj .glb .gltf .ply .stl .off under a folder.")
  p.add_argument("--input", required=True, help="Folder (category = first sub-folder name).")
  p.add_argument("--name", required=True, help="Dataset name.")
  p.add_argument("--split-seed", type=int, default=0)
  p = add("future3d", "3D-FUTURE models (3D-FUTURE-model/<id>/normalized_model.obj).")
  p.add_argument("--input", required=True, help="Folder holding 3D-FUTURE-model/.")
  p.add_argument("--seed", type=int, default=0, help="Views and splits.")
  p = add("shapenet", "ShapeNet R2N2 renderings + ShapeNetVox32.", views=False)
  p.add_argument("--rendering-dir", required=True, help="ShapeNetRendering folder.")
  p.add_argument("--voxel-dir", required=True, help="ShapeNetVox32 folder.")
  p.add_argument("--split", default="r2n2", help="'r2n2' or a Pix2Vox-style split JSON file.")
  p.add_argument("--classes", nargs="*", default=None, help="Synset ids or names (default all).")
  return parser


def main(argv=None):
  args = _parser().parse_args(argv)
  try:
    if args.source == "procedural":
      from data_prep import procedural
      dataset_dir, report = procedural.build_procedural(
          args.data_dir, args.num_objects, args.views, args.seed, workers=args.workers,
          beam=args.beam)
    elif args.source == "mesh-folder":
      from data_prep import mesh_folder
      dataset_dir, report = mesh_folder.build_mesh_folder(
          args.input, args.data_dir, args.name, views=args.views, workers=args.workers,
          split_seed=args.split_seed, beam=args.beam)
    elif args.source == "future3d":
      from data_prep import future3d
      dataset_dir, report = future3d.build_future3d(
          args.input, args.data_dir, views=args.views, workers=args.workers, seed=args.seed,
          beam=args.beam)
    else:
      from data_prep import shapenet  # Written separately; imported only when asked for.
      dataset_dir, report = shapenet.build_shapenet(
          args.rendering_dir, args.voxel_dir, args.data_dir, split=args.split,
          classes=args.classes, workers=args.workers)
  except (RuntimeError, OSError, ValueError) as e:  # Nothing usable, missing or bad input folders.
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(report)
  print(f"Dataset written to {dataset_dir}")
  from r2n2_jax import input_pipeline  # The model's input normalisation for this data.
  try:
    mean, std = input_pipeline.view_statistics(dataset_dir)
  except ValueError as e:  # No (or an empty) train split: nothing to measure.
    print(f"Train with: --config.dataset={dataset_dir} (input statistics not measured: {e})")
    return 0
  fmt = lambda v: "(" + ",".join(f"{c:.3f}" for c in v) + ")"
  print(f"Train with: --config.dataset={dataset_dir} --config.model.input_mean='{fmt(mean)}' "
        f"--config.model.input_std='{fmt(std)}'")
  return 0


if __name__ == "__main__":
  sys.exit(main())
