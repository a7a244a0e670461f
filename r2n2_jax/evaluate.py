"""Evaluates a checkpoint on a split: IoU / log loss / F-score per view count and class, and plots.

  python -m r2n2_jax.evaluate --workdir DIR [--config CFG[:arg]] [--split test] [--step N]
      [--save_predictions] [--config.x=y]

Writes DIR/eval/ (DIR/eval_<split>/ for splits other than test):
  metrics.json            figures of DESIGN.md section 6 (see metrics.summarize), step and config
  predictions_NNNNN.npz   with --save_predictions: probs (N, 32, 32, 32) float32, voxels (N, 32,
                          32, 32) bool, n_views (N,), object_id (N,), category (N,); one row per
                          (object, view count); metrics.json is exactly what these rows give
  iou_vs_views.png, iou_by_class.png, gallery.png
Test views are the first n of a per-object permutation drawn from `--view_seed` (not the training
seed), so runs with different configs see the same views.
"""

import glob
import json
import os

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np
import tqdm

from data_prep import records
from r2n2_jax import checkpoints
from r2n2_jax import cli
from r2n2_jax import config_lib
from r2n2_jax import input_pipeline
from r2n2_jax import metrics
from r2n2_jax import process_setup
from r2n2_jax import visualize
from r2n2_jax.models import build_model

VIEW_COUNTS = (1, 2, 3, 4, 5, 8, 12, 16, 20)  # Reported where the data has that many views.
GALLERY_PER_CLASS = 2
GALLERY_VIEWS = 4

def define_flags():
  """The command line's absl flags, defined by `python -m r2n2_jax.evaluate` only (importing this
  module defines none, so it can sit beside launch.py's flags in one process)."""
  flags.DEFINE_string(
      "config", None, "Config file (path.py[:arg]); default: the workdir's config.json. Fields are "
      "overridden with --config.<field>=<value> (also without --config).")
  flags.DEFINE_string("workdir", None, "Training workdir with checkpoints/.")
  flags.DEFINE_string("split", "test", "Split to evaluate.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_bool("save_predictions", False, "Write eval/predictions_*.npz.")
  flags.DEFINE_integer("batch_size", 8, "Objects per forward pass.")
  flags.DEFINE_integer("max_objects", -1, "Evaluate the first N objects (-1: all).")
  flags.DEFINE_integer("view_seed", 0, "Seed of the fixed per-object test-view draw.")
  flags.DEFINE_bool("plots", True, "Write the PNG plots and gallery (--noplots: metrics only, "
                    "e.g. on a node without EGL).")
  flags.DEFINE_list("view_counts", None,
                    "View counts to evaluate (default: 1,2,3,4,5,8,12,16,20 up to the number of "
                    "views of the split's first object).")


def eval_dir(workdir, split):
  """WORKDIR/eval for the test split, WORKDIR/eval_<split> otherwise."""
  return os.path.join(workdir, "eval" if split == "test" else f"eval_{split}")


def make_reconstruct_fns(model_config):
  """Jitted (encode, decode): the R2N2 forward pass split at the encoder features.

  encode(params, views (B, V, 127, 127, 3)) -> features (B, V, F);
  decode(params, features, view_mask (B, V)) -> P(occupied) (B, 32, 32, 32).
  The encoder does not depend on the recurrence, so every view count is evaluated from ONE
  encoding of the largest view set (the 9 view counts would otherwise encode each view 9 times).
  """
  model = build_model(model_config)
  encode = jax.jit(lambda params, views: model.apply({"params": params}, views, method="encode"))
  decode = jax.jit(lambda params, features, view_mask: metrics.occupancy_probability(
      model.apply({"params": params}, features, view_mask, method="decode")))
  return encode, decode


def _view_counts(requested, num_available):
  if requested:
    counts = sorted({int(c) for c in requested})
    if counts[0] < 1 or counts[-1] > num_available:
      raise ValueError(f"view counts {counts} must lie in [1, {num_available}] (views per object)")
    return counts
  return [c for c in VIEW_COUNTS if c <= num_available]


def evaluate(config, workdir, split="test", step=None, save_predictions=False, batch_size=8,
             max_objects=-1, view_seed=0, view_counts=None, plots=True):
  """Evaluates the checkpoint of `workdir` on `split`; writes eval files and returns metrics.json.

  `plots=False` writes no PNGs (the gallery renders voxels with pyrender: EGL or OSMesa needed).
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  variables, step = checkpoints.restore_variables(workdir, config, step)
  params = variables["params"]
  data_dir = input_pipeline.dataset_dir(config)
  source = records.load_split(data_dir, split)
  num_objects = len(source) if max_objects < 0 else min(max_objects, len(source))
  if num_objects == 0:
    raise ValueError(f"{data_dir}: split {split!r} has no objects")
  counts = _view_counts(view_counts, source[0]["views"].shape[0])
  max_count = counts[-1]
  out_dir = eval_dir(workdir, split)
  os.makedirs(out_dir, exist_ok=True)
  for stale in glob.glob(os.path.join(out_dir, "predictions_*.npz")):
    os.remove(stale)

  encode, decode = make_reconstruct_fns(config.model)
  masks = {c: np.broadcast_to(np.arange(max_count) < c, (batch_size, max_count)) for c in counts}
  rows = {k: [] for k in ("n_views", "object_id", "category")}
  gallery = {}
  for shard, start in enumerate(tqdm.trange(0, num_objects, batch_size, desc=f"eval {split}")):
    indices = range(start, min(start + batch_size, num_objects))
    views = np.zeros((batch_size, max_count, records.CROP_SIZE, records.CROP_SIZE, 3), np.float32)
    voxels = np.zeros((len(indices),) + (records.VOXEL_RESOLUTION,) * 3, bool)
    ids, cats = [], []
    for b, index in enumerate(indices):
      record = source[index]
      ids.append(records.decode_text(record["object_id"]))
      cats.append(records.decode_text(record["category"]))
      available = record["views"].shape[0]
      if available < max_count:
        raise ValueError(f"{data_dir}: object {ids[-1]} of split {split!r} has {available} views, "
                         f"fewer than {max_count}; pass --view_counts up to {available}")
      chosen = input_pipeline.eval_view_indices(available, max_count, view_seed, index)
      views[b] = input_pipeline.preprocess_eval_views(record["views"], chosen)
      voxels[b] = record["voxels"]
    features = encode(params, views)
    shard_rows = {k: [] for k in ("probs", "voxels", "n_views", "object_id", "category")}
    for c in counts:
      probs = np.asarray(decode(params, features, masks[c]))[:len(indices)]
      for key, value in metrics.row_metrics(probs, voxels, metrics.IOU_THRESHOLD).items():
        rows.setdefault(key, []).append(value)
      shard_rows["probs"].append(probs)
      shard_rows["voxels"].append(voxels)
      shard_rows["n_views"].append(np.full(len(indices), c, np.int32))
      shard_rows["object_id"].append(np.array(ids))
      shard_rows["category"].append(np.array(cats))
    for b, category in enumerate(cats):
      if len(gallery.setdefault(category, [])) < GALLERY_PER_CLASS:
        probs = shard_rows["probs"][-1][b]
        iou = float(metrics.iou_per_object(probs[None], voxels[b][None], metrics.IOU_THRESHOLD)[0])
        gallery[category].append({"views": views[b, :min(max_count, GALLERY_VIEWS)],
                                  "pred": probs >= metrics.IOU_THRESHOLD, "gt": voxels[b],
                                  "label": f"{category}\n{ids[b]}\nIoU {iou:.2f}"})
    shard_rows = {k: np.concatenate(v) for k, v in shard_rows.items()}
    for key in ("n_views", "object_id", "category"):
      rows[key].append(shard_rows[key])
    if save_predictions:
      np.savez_compressed(os.path.join(out_dir, f"predictions_{shard:05d}.npz"), **shard_rows)

  rows = {k: np.concatenate(v) for k, v in rows.items()}
  results = metrics.summarize(rows, max_count)
  results.update({
      "step": int(step), "split": split, "workdir": workdir, "dataset": data_dir,
      "view_seed": int(view_seed), "threshold": metrics.IOU_THRESHOLD,
      "config": json.loads(config.to_json_best_effort()),
  })
  with open(os.path.join(out_dir, "metrics.json"), "w") as f:
    json.dump(results, f, indent=2)
  if plots:
    write_plots(results, gallery, out_dir)
  return results


def write_plots(results, gallery, out_dir):
  """iou_vs_views.png, iou_by_class.png and gallery.png (objects sorted by class) in out_dir."""
  visualize.save_iou_curves({"": results["iou_by_views"]}, os.path.join(out_dir, "iou_vs_views.png"),
                            title=f"{results['split']}: IoU@0.4 vs views (step {results['step']})")
  visualize.save_class_bars(results["iou_by_class"], results["objects_by_class"],
                            os.path.join(out_dir, "iou_by_class.png"),
                            title=f"IoU@0.4 per class, {results['views']} views")
  gallery_rows = [row for category in sorted(gallery) for row in gallery[category]]
  visualize.save_gallery(gallery_rows, os.path.join(out_dir, "gallery.png"),
                         min(GALLERY_VIEWS, results["views"]),
                         pred_title=f"prediction ({results['views']} views)")


def load_predictions(out_dir):
  """Concatenates every predictions_*.npz of an eval directory into one dict of arrays."""
  paths = sorted(glob.glob(os.path.join(out_dir, "predictions_*.npz")))
  if not paths:
    raise FileNotFoundError(f"{out_dir}: no predictions_*.npz (run evaluate --save_predictions)")
  parts = [dict(np.load(p)) for p in paths]
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


_OVERRIDES = []  # --config.<field>=<value> flags, taken out of argv by _parse_flags.


def _parse_flags(argv):
  argv, overrides = config_lib.split_flag_overrides(argv)
  _OVERRIDES.extend(overrides)
  return app.parse_flags_with_usage(argv)


def load_config(config_spec, workdir, overrides=()):
  """The --config file (or the workdir's config.json) with overrides, validated."""
  if config_spec:
    _, config = config_lib.load(config_spec, overrides)
  else:
    config = checkpoints.load_config(workdir)
    config_lib.apply_overrides(config, overrides)
  return config_lib.validate(config)


def main(argv):
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  process_setup.setup("evaluate")
  if not FLAGS.workdir:
    cli.exit_with_error("evaluate", "--workdir is required")
  with cli.user_errors("evaluate"):
    config = load_config(FLAGS.config, FLAGS.workdir, _OVERRIDES)
    results = evaluate(config, FLAGS.workdir, FLAGS.split, FLAGS.step, FLAGS.save_predictions,
                       FLAGS.batch_size, FLAGS.max_objects, FLAGS.view_seed, FLAGS.view_counts,
                       FLAGS.plots)
  logging.info("wrote %s", eval_dir(os.path.abspath(os.path.expanduser(FLAGS.workdir)), FLAGS.split))
  print(json.dumps({k: results[k] for k in ("step", "views", "num_objects", "iou", "iou_by_views",
                                             "log_loss", "fscore")}, indent=2))


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=_parse_flags)
