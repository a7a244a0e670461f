"""report: Table-1 layout from eval/metrics.json files, view-count choice, missing evaluations.

The end-to-end path (evaluate -> report, sweep -> report) is covered in test_evaluate.py; these
cases feed report the metrics.json it reads, to pin the table's layout.
"""

import json
import os

import pytest

from r2n2_jax import report


def _write_metrics(workdir, split, views, encoder="residual", cell="lstm", kernel=1):
  directory = os.path.join(workdir, "eval" if split == "test" else f"eval_{split}")
  os.makedirs(directory)
  counts = [str(n) for n in range(1, views + 1)]
  metrics = {
      "step": 100, "views": views,
      "fscore_by_views": {n: 0.05 * int(n) for n in counts},
      "iou_by_views": {n: 0.1 * int(n) for n in counts},
      "log_loss_by_views": {n: 1.0 / int(n) for n in counts},
      "config": {"model": {"encoder": encoder, "decoder": encoder, "cell": cell,
                           "kernel_size": kernel}},
  }
  with open(os.path.join(directory, "metrics.json"), "w") as f:
    json.dump(metrics, f)


def test_table_rows_in_paper_layout(tmp_path):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  _write_metrics(a, "test", 8)
  _write_metrics(a, "train", 8)
  _write_metrics(b, "test", 3, encoder="simple", cell="gru", kernel=3)
  table = report.write_report([a, b])
  lines = table.splitlines()
  assert lines[0].startswith("| Run | Encoder / decoder | Cell | Kernel | Views | Train loss |")
  # Run a has 5 views: its row uses 5 (the paper's); run b only 3: its largest.
  assert lines[2] == ("| a | residual / residual | LSTM | 1 | 5 | 0.200 | 0.200 | 0.500 | 0.500 "
                      "| 0.250 | 100 |")
  assert lines[3] == "| b | simple / simple | GRU | 3 | 3 | – | 0.333 | – | 0.300 | 0.150 | 100 |"
  assert (tmp_path / "report" / "report.md").read_text() == table
  assert (tmp_path / "report" / "iou_vs_views.png").read_bytes()[:4] == b"\x89PNG"


def test_unevaluated_run_is_a_clear_error(tmp_path):
  (tmp_path / "run").mkdir()
  with pytest.raises(SystemExit) as exit_info:
    report.main([str(tmp_path / "run")])
  assert "no eval/metrics.json" in str(exit_info.value.code)
  assert "r2n2_jax.evaluate" in str(exit_info.value.code)


def test_cli_prints_the_table(tmp_path, capsys):
  _write_metrics(str(tmp_path / "x"), "test", 5)
  report.main([str(tmp_path / "x"), "--output", str(tmp_path / "out")])
  assert "| x | residual / residual | LSTM | 1 | 5 |" in capsys.readouterr().out
  assert (tmp_path / "out" / "report.md").exists()
