"""End-to-end evaluation: a real (untrained) checkpoint on a tiny TFDS dataset, metrics vs npz."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import default
from data_prep import records
from r2n2_jax import checkpoints
from r2n2_jax import evaluate
from r2n2_jax import input_pipeline
from r2n2_jax import metrics
from r2n2_jax import report
from r2n2_jax import sweep
from r2n2_jax.models import build_model
import synthetic  # pylint: disable=g-bad-import-order  (tests/synthetic.py)

CATEGORIES = ("box", "slab")


def make_tiny_run(root):
  """A TFDS dataset (3 test, 2 train objects) and a workdir with a step-1 checkpoint -> config."""
  rng = np.random.default_rng(0)
  test = [synthetic.example(rng, i, CATEGORIES[i % 2]) for i in range(3)]
  train_split = [synthetic.example(rng, i, CATEGORIES[i % 2]) for i in range(3, 5)]
  data_dir = records.write_dataset("tiny_eval", {"test": test, "train": train_split}, root / "data")
  config = default.get_config("tiny,narrow")
  config.dataset = data_dir
  config.data_dir = str(root / "data")
  # The name sweep gives configs/simple_gru_k3.py:tiny.
  workdir = synthetic.write_workdir(str(root / "simple_gru_k3_tiny"), config)
  return config, workdir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(config, workdir, metrics) after `evaluate --save_predictions --noplots` on the test split
  (the plots render with EGL: the slow sweep test checks them)."""
  config, workdir = make_tiny_run(tmp_path_factory.mktemp("eval"))
  results = evaluate.evaluate(config, workdir, "test", save_predictions=True, batch_size=2,
                              plots=False)
  return config, workdir, results


def test_metrics_json_fields_and_view_counts(run):
  _, workdir, results = run
  with open(os.path.join(workdir, "eval", "metrics.json")) as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(results))
  assert set(saved["iou"]) == {"0.2", "0.3", "0.4", "0.5"}
  # The data has 4 views: the protocol's counts 1..4, none beyond.
  assert list(saved["iou_by_views"]) == ["1", "2", "3", "4"]
  assert saved["views"] == 4 and saved["num_objects"] == 3 and saved["step"] == 1
  assert saved["objects_by_class"] == {"box": 2, "slab": 1}
  assert set(saved["iou_by_class"]) == set(CATEGORIES)
  assert saved["config"]["model"]["cell"] == "gru"
  for value in [*saved["iou"].values(), *saved["iou_by_views"].values(), saved["fscore"]]:
    assert 0.0 <= value <= 1.0
  assert saved["log_loss"] > 0
  assert not [n for n in os.listdir(os.path.join(workdir, "eval")) if n.endswith(".png")]


def test_metrics_json_is_exactly_what_the_predictions_give(run):
  config, workdir, results = run
  pred = evaluate.load_predictions(os.path.join(workdir, "eval"))
  assert pred["probs"].shape == (12, 32, 32, 32) and pred["probs"].dtype == np.float32
  assert pred["voxels"].dtype == bool and pred["n_views"].shape == (12,)
  assert np.all((pred["probs"] >= 0) & (pred["probs"] <= 1))
  source = records.load_split(input_pipeline.dataset_dir(config), "test")
  gt = {records.decode_text(source[i]["object_id"]): source[i]["voxels"] for i in range(3)}
  for object_id, voxels in zip(pred["object_id"], pred["voxels"]):
    np.testing.assert_array_equal(voxels, gt[str(object_id)])

  def mean_iou(rows, t):  # Plain numpy, independent of metrics.iou_per_object.
    p, g = pred["probs"][rows] >= t, pred["voxels"][rows]
    inter, union = (p & g).sum(axis=(1, 2, 3)), (p | g).sum(axis=(1, 2, 3))
    return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))

  head = pred["n_views"] == 4
  for t in ("0.2", "0.3", "0.4", "0.5"):
    assert results["iou"][t] == pytest.approx(mean_iou(head, float(t)), rel=1e-6)
  for n, value in results["iou_by_views"].items():
    assert value == pytest.approx(mean_iou(pred["n_views"] == int(n), 0.4), rel=1e-6)
  for c, value in results["iou_by_class"].items():
    assert value == pytest.approx(mean_iou(head & (pred["category"] == c), 0.4), rel=1e-6)
  p = np.clip(pred["probs"][head].astype(np.float64), 1e-7, 1 - 1e-7)
  g = pred["voxels"][head]
  log_loss = -np.mean(np.where(g, np.log(p), np.log(1 - p)))
  assert results["log_loss"] == pytest.approx(log_loss, rel=1e-9)
  fscore = metrics.fscore_per_object(pred["probs"][head], g, 0.4)
  assert results["fscore"] == pytest.approx(float(np.mean(fscore)), rel=1e-9)


def test_split_forward_equals_model_apply_on_the_seeded_views(run):
  """Evaluation's 1- and 3-view probabilities are the model's on the seeded draw of views."""
  config, workdir, _ = run
  variables, _ = checkpoints.restore_variables(workdir, config)
  source = records.load_split(input_pipeline.dataset_dir(config), "test")
  index = 2
  record = source[index]
  pred = evaluate.load_predictions(os.path.join(workdir, "eval"))
  apply = jax.jit(build_model(config.model).apply)
  for n in (1, 3):
    chosen = input_pipeline.eval_view_indices(synthetic.NUM_VIEWS, n, 0, index)
    assert len(set(chosen.tolist())) == n
    np.testing.assert_array_equal(chosen, input_pipeline.eval_view_indices(synthetic.NUM_VIEWS, 4, 0, index)[:n])
    views = input_pipeline.preprocess_eval_views(record["views"], chosen)[None]
    expected = metrics.occupancy_probability(apply(variables, views, np.ones((1, n), bool)))[0]
    row = (pred["n_views"] == n) & (pred["object_id"] == records.decode_text(record["object_id"]))
    np.testing.assert_allclose(pred["probs"][row][0], expected, atol=2e-5)


def test_report_table_from_evaluated_runs(run, tmp_path):
  _, workdir, results = run
  table = report.write_report([workdir], str(tmp_path / "report"))
  assert "| simple / simple (width 0.125) | GRU | 3 |" in table
  assert f"{results['iou_by_views']['4']:.3f}" in table
  assert os.path.getsize(tmp_path / "report" / "iou_vs_views.png") > 0


@pytest.mark.slow  # Trains nothing but evaluates two splits of a run (~10 s).
def test_sweep_resumes_finished_runs_and_reports_train_and_test(run):
  config, workdir, results = run
  root = os.path.dirname(workdir)
  before = os.path.getmtime(os.path.join(workdir, "eval", "metrics.json"))
  table = sweep.sweep(root, ["simple_gru_k3"], "tiny", [
      f"dataset={config.dataset}", f"data_dir={config.data_dir}", "num_train_steps=1",
      f"model.width={config.model.width}"],
      train_eval_objects=2)
  # Trained (step 1 >= num_train_steps) and test-evaluated already: neither is redone.
  assert checkpoints.latest_step(workdir) == 1
  assert os.path.getmtime(os.path.join(workdir, "eval", "metrics.json")) == before
  with open(os.path.join(workdir, "eval_train", "metrics.json")) as f:
    train_results = json.load(f)
  assert train_results["num_objects"] == 2 and train_results["split"] == "train"
  for name in ("iou_vs_views.png", "iou_by_class.png", "gallery.png"):
    with open(os.path.join(workdir, "eval_train", name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  row = [line for line in table.splitlines() if line.startswith("| simple_gru_k3_tiny")][0]
  cells = [c.strip() for c in row.strip("|").split("|")]
  assert cells[1:5] == ["simple / simple (width 0.125)", "GRU", "3", "4"]
  assert cells[5:9] == [f"{train_results['log_loss_by_views']['4']:.3f}",
                        f"{results['log_loss_by_views']['4']:.3f}",
                        f"{train_results['iou_by_views']['4']:.3f}",
                        f"{results['iou_by_views']['4']:.3f}"]
  assert os.path.exists(os.path.join(root, "report", "report.md"))


def test_sweep_overrides_are_typed_and_checked():
  name, config = sweep.load_config("residual_lstm_k1:tiny", ["procedural.num_objects=7",
                                                            "learning_rate=2e-4", "model.cell=gru"])
  assert name == "residual_lstm_k1_tiny"
  assert (config.procedural.num_objects, config.learning_rate, config.model.cell) == (7, 2e-4, "gru")
  assert config.model.encoder == "residual" and config.max_views == 3
  with pytest.raises(KeyError):
    sweep.load_config("simple_gru_k1", ["no_such_field=1"])
  with pytest.raises(TypeError):
    sweep.load_config("simple_gru_k1", ["num_train_steps=many"])


@pytest.mark.slow  # A fresh Python process.
def test_cli_without_checkpoint_prints_one_line_error(tmp_path):
  checkpoints.save_config(str(tmp_path), default.get_config("tiny"))
  proc = subprocess.run(
      [sys.executable, "-m", "r2n2_jax.evaluate", f"--workdir={tmp_path}"],
      capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300,
      check=False)
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr
  assert "no checkpoint" in proc.stderr.strip().splitlines()[-1]
