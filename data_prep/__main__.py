"""Command line: `python -m data_prep <source> ...` builds a TFDS dataset of records.

  python -m data_prep procedural --data-dir OUT [--num-objects N] [--views V] [--seed S]
  python -m data_prep mesh-folder --input DIR --data-dir OUT --name NAME [--views V]
                                  [--split-seed S]
  python -m data_prep future3d --input DIR --data-dir OUT [--views V]
  python -m data_prep shapenet --rendering-dir R --voxel-dir V --data-dir OUT
                               [--split r2n2|JSON] [--classes ...]
Every source takes --workers N (default: all cores) and --beam to run in Apache Beam instead
(DirectRunner unless told otherwise); with --beam, every flag data_prep does not know is a Beam
pipeline option (Beam's own convention), e.g. --runner=FlinkRunner --flink_master=host:8081, and
--beam-runner NAME is short for --runner=NAME. Prints the preparation report and the training
flags for the dataset (its path and the views' per-channel mean/std); exits 0 when the dataset
was written (bad inputs are skipped and listed), 1 with one `error: ...` line when nothing usable
remained or an input is missing or malformed, 2 on bad flags.
"""

import argparse
import sys


def _positive(text):
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
  return value


def _parser():
  parser = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__.split("\n")[0],
                                   allow_abbrev=False)
  sub = parser.add_subparsers(dest="source", required=True)

  def add(name, help_text, views=True):
    # allow_abbrev=False: a Beam option must never be taken for an abbreviation of ours.
    p = sub.add_parser(name, help=help_text, allow_abbrev=False)
    p.add_argument("--data-dir", required=True, help="Output TFDS data directory.")
    p.add_argument("--workers", type=_positive, default=None,
                   help="Processes (default: all cores).")
    if views:
      p.add_argument("--views", type=_positive, default=24, help="Rendered views per object.")
    p.add_argument("--beam", action="store_true",
                   help="Prepare and write with Apache Beam (needs apache-beam); unknown flags "
                        "are passed to Beam as pipeline options.")
    p.add_argument("--beam-runner", default=None,
                   help="Beam runner (DirectRunner, DataflowRunner, FlinkRunner, SparkRunner, "
                        "...); implies --beam.")
    return p

  p = add("procedural", "The embedded procedural furniture dataset.")
  p.add_argument("--num-objects", type=_positive, default=2000)
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


def _build(args, beam_options):
  """Runs the builder of args.source; returns (dataset_dir, report text)."""
  beam = beam_options is not None
  if args.source == "procedural":
    from data_prep import procedural
    return procedural.build_procedural(
        args.data_dir, args.num_objects, args.views, args.seed, workers=args.workers, beam=beam,
        beam_options=beam_options)
  if args.source == "mesh-folder":
    from data_prep import mesh_folder
    return mesh_folder.build_mesh_folder(
        args.input, args.data_dir, args.name, views=args.views, workers=args.workers,
        split_seed=args.split_seed, beam=beam, beam_options=beam_options)
  if args.source == "future3d":
    from data_prep import future3d
    return future3d.build_future3d(
        args.input, args.data_dir, views=args.views, workers=args.workers, seed=args.seed,
        beam=beam, beam_options=beam_options)
  from data_prep import shapenet
  dataset_dir, report = shapenet.build_shapenet(
      args.rendering_dir, args.voxel_dir, args.data_dir, split=args.split, classes=args.classes,
      workers=args.workers, beam=beam, beam_options=beam_options)
  return dataset_dir, report["text"]


def _error(message):
  print("error: " + " ".join(str(message).split()), file=sys.stderr)
  return 1


def main(argv=None):
  parser = _parser()
  args, beam_flags = parser.parse_known_args(argv)
  if args.beam_runner:
    args.beam = True
    beam_flags = [f"--runner={args.beam_runner}"] + beam_flags
  if beam_flags and not args.beam:
    parser.error(f"unrecognized arguments: {' '.join(beam_flags)} (Beam options need --beam)")
  from data_prep import framing, pipeline, render
  render.configure_process()  # Entry point: headless EGL rendering, here and in the workers.
  beam_options = None
  if args.beam:
    try:
      beam_options = pipeline.beam_pipeline_options(beam_flags)
    except ImportError:
      return _error("--beam needs apache-beam: pip install -e '.[beam]'")
    except ValueError as e:
      return _error(e)
  try:
    dataset_dir, report = _build(args, beam_options)
  except pipeline.NothingUsable as e:
    if e.report:
      print(e.report)
    return _error(e)
  except (RuntimeError, OSError, ValueError) as e:  # Missing or bad input folders, bad split file.
    return _error(e)
  print(report)
  print(f"Dataset written to {dataset_dir}")
  try:
    mean, std = framing.view_statistics(dataset_dir)
  except ValueError as e:  # No (or an empty) train split: nothing to measure.
    print(f"Train with: --config.dataset={dataset_dir} (input statistics not measured: {e})")
    return 0
  fmt = lambda v: "(" + ",".join(f"{c:.3f}" for c in v) + ")"
  print(f"Train with: --config.dataset={dataset_dir} --config.model.input_mean='{fmt(mean)}' "
        f"--config.model.input_std='{fmt(std)}'")
  return 0


if __name__ == "__main__":
  sys.exit(main())
