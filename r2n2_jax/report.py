"""Compares evaluated runs in the layout of the 3D-R2N2 paper's Table 1, and overlays their curves.

  python -m r2n2_jax.report DIR1 DIR2 ... [--output OUT] [--views 5]

Reads DIR/eval/metrics.json (test) and, where present, DIR/eval_train/metrics.json (written by
`evaluate --split train`); prints a Markdown table and writes OUT/report.md and
OUT/iou_vs_views.png (OUT defaults to the runs' common parent directory + /report).
"""

import argparse
import json
import os
import sys

from r2n2_jax import evaluate
from r2n2_jax import metrics
from r2n2_jax import visualize
from r2n2_jax.models import model_width

TABLE_VIEWS = 5  # The paper's Table 1 compares the variants at 5 views.
HEADER = ("| Run | Encoder / decoder | Cell | Kernel | Views | Train loss | Test loss | Train IoU "
          "| Test IoU | Test F@1% | Step |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def _load(workdir, split):
  path = os.path.join(evaluate.eval_dir(workdir, split), "metrics.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _views(results, views):
  """`views` if that count was evaluated, else the largest evaluated count (as a string key)."""
  keys = results["iou_by_views"]
  return str(views) if str(views) in keys else max(keys, key=int)


def _row(workdir, test, train, views):
  model = test["config"]["model"]
  n = _views(test, views)
  fmt = lambda results, key: "–" if results is None or n not in results[key] else \
      f"{results[key][n]:.3f}"
  width = model_width(model)  # Not the paper's network unless 1: said in the row.
  network = f"{model['encoder']} / {model['decoder']}" + (f" (width {width:g})" if width != 1 else "")
  return (f"| {os.path.basename(os.path.normpath(workdir))} | {network} | "
          f"{model['cell'].upper()} | {model['kernel_size']} | {n} | "
          f"{fmt(train, 'log_loss_by_views')} | {fmt(test, 'log_loss_by_views')} | "
          f"{fmt(train, 'iou_by_views')} | {fmt(test, 'iou_by_views')} | "
          f"{fmt(test, 'fscore_by_views')} | "
          f"{test['step']} |")


def write_report(workdirs, output=None, views=TABLE_VIEWS):
  """Writes OUT/report.md and OUT/iou_vs_views.png for evaluated workdirs; returns the Markdown."""
  workdirs = [os.path.abspath(os.path.expanduser(w)) for w in workdirs]
  rows, curves = [], {}
  for workdir in workdirs:
    test = _load(workdir, "test")
    if test is None:
      raise FileNotFoundError(f"{workdir}: no eval/metrics.json; run `python -m r2n2_jax.evaluate "
                              f"--workdir {workdir}` first")
    rows.append(_row(workdir, test, _load(workdir, "train"), views))
    curves[os.path.basename(os.path.normpath(workdir))] = test["iou_by_views"]
  output = output or os.path.join(os.path.commonpath(workdirs), "report")
  os.makedirs(output, exist_ok=True)
  table = "\n".join([
      HEADER, *rows, "",
      f"Loss: mean voxel log loss; IoU: mean per-object IoU at threshold {metrics.IOU_THRESHOLD} (R2N2 "
      f"protocol) with "
      f"`Views` seeded test views (the paper's Table 1 uses {TABLE_VIEWS}); F@1%: F-score at 1% of "
      "the grid side; train figures need `evaluate --split train`.", ""])
  with open(os.path.join(output, "report.md"), "w") as f:
    f.write(table)
  visualize.save_iou_curves(curves, os.path.join(output, "iou_vs_views.png"))
  return table


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m r2n2_jax.report", description=__doc__.split("\n")[0])
  parser.add_argument("workdirs", nargs="+", help="Evaluated training workdirs.")
  parser.add_argument("--output", help="Output directory (default: common parent + /report).")
  parser.add_argument("--views", type=int, default=TABLE_VIEWS, help="View count of the table.")
  args = parser.parse_args(argv)
  try:
    table = write_report(args.workdirs, args.output, args.views)
  except (FileNotFoundError, KeyError, ValueError) as e:
    sys.exit(f"report: {e}")
  print(table)


if __name__ == "__main__":
  main()
