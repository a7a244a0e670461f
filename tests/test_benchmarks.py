"""benchmarks/gpu_check.py in its smoke mode: every section runs at tiny sizes and writes its figures."""

import json
import os
import subprocess
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_gpu_check_smoke_writes_every_section(tmp_path):
  out = tmp_path / "out"
  proc = subprocess.run(
      [sys.executable, os.path.join(_ROOT, "benchmarks", "gpu_check.py"), "--smoke",
       "--out", str(out), "--data_dir", str(tmp_path / "data"), "--budget_s", "900"],
      capture_output=True, text=True, timeout=1200, check=False)  # ~2-3 min on an idle machine.
  assert proc.returncode == 0, proc.stderr[-2000:]
  report = json.loads((out / "gpu_check.json").read_text())
  assert [(r["model"], r["dtype"]) for r in report["steps"]] == [
      ("simple_gru_k3", "float32"), ("simple_gru_k3", "bfloat16"),
      ("residual_gru_k3", "float32"), ("residual_gru_k3", "bfloat16")]
  for r in report["steps"]:
    if r["dtype"] == "bfloat16":  # Not run on CPU (XLA:CPU emulates bfloat16: minutes a step).
      assert r["skipped"].startswith("bfloat16 is for GPUs"), r
      continue
    assert "skipped" not in r, r
    assert r["step_s"] > 0 and r["compile_s"] > 0 and r["flops"] > 0 and r["tflops_per_s"] > 0
  for r in report["torch"]:  # Runs where torch imports; else says why it was skipped.
    assert r.get("step_s", 0) > 0 or "skipped" in r
  p = report["pipeline"]
  assert p["real_views_per_s"] > 0 and p["real_views_per_cpu_s"] > 0 and p["data_workers"] == 0
  assert p["demand_views_per_s"] > 0 and p["delivered_over_demand"] > 0
  t = report["train"]
  assert t["steps"] >= 20 and t["steps_per_s"] > 0
  assert sorted(t["test_iou_by_views"]) == ["1", "2"] and all(0 <= v <= 1 for v in t["test_iou_by_views"].values())
  assert os.path.isfile(out / "train" / "eval" / "metrics.json")
  md = (out / "gpu_check.md").read_text()
  assert "simple_gru_k3 float32 B2/V2" in md and "Input pipeline" in md and "IoU@0.4" in md
