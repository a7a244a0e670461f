"""Training: pmap equals one device, one compilation per run, a non-finite loss stops the run
and is never checkpointed, the optimiser's decay mask."""

import functools
import os

import flax
from flax import traverse_util
import jax
import numpy as np
import pytest

from configs import default
from r2n2_jax import input_pipeline
from r2n2_jax import checkpoints
from r2n2_jax import train
from r2n2_jax import train_state


def _narrow(tiny_config):
  """The tiny config with the `narrow` variant: what these tests check does not depend on the
  width (the paper's widths train in test_import_weights' fine-tuning test)."""
  config = tiny_config.copy_and_resolve_references()
  default.apply_variant(config, "narrow")
  return config


def test_pmap_over_two_devices_matches_one_device(tiny_config):
  assert jax.local_device_count() == 2
  config = _narrow(tiny_config)
  batch = next(input_pipeline.create_train_iterator(config, input_pipeline.dataset_dir(config)))
  state = train_state.create_train_state(config, jax.random.key(0))

  single_state, single_metrics = jax.jit(train.train_step)(state, batch)
  p_step = jax.pmap(functools.partial(train.train_step, axis_name="batch"), axis_name="batch")
  sharded = jax.tree.map(lambda x: x.reshape((2, -1) + x.shape[1:]), batch)
  p_state, p_metrics = p_step(flax.jax_utils.replicate(state), sharded)

  np.testing.assert_allclose(p_metrics["loss"][0], single_metrics["loss"], rtol=1e-5)
  np.testing.assert_allclose(p_metrics["iou"][0], single_metrics["iou"], rtol=1e-5)
  # The replicas agree exactly with each other, and with the single-device step.
  for a, b in zip(jax.tree.leaves(p_state.params), jax.tree.leaves(single_state.params)):
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(a[1]))
    np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b), rtol=0, atol=2e-6)
  moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in
           zip(jax.tree.leaves(single_state.params), jax.tree.leaves(state.params))]
  assert min(moved) > 0  # Every parameter took a step.


def test_weight_decay_applies_to_kernels_only(tiny_config):
  """With zero gradients, Adam's update is pure decay: kernels shrink, biases stay."""
  config = _narrow(tiny_config)
  config.weight_decay = 0.5
  state = train_state.create_train_state(config, jax.random.key(0))
  zeros = jax.tree.map(np.zeros_like, state.params)
  new = state.apply_gradients(grads=zeros).params
  flat_old = traverse_util.flatten_dict(state.params)
  flat_new = traverse_util.flatten_dict(new)
  for path, old in flat_old.items():
    changed = not np.array_equal(np.asarray(old), np.asarray(flat_new[path]))
    assert changed == (path[-1] != "bias"), path


def test_learning_rate_schedule_decays_at_the_configured_steps(tiny_config):
  config = tiny_config.copy_and_resolve_references()
  config.lr_decay_steps = (3, 5)
  schedule = train_state.learning_rate_schedule(config)
  lr = config.learning_rate
  np.testing.assert_allclose([schedule(s) for s in (0, 2, 3, 4, 5, 9)],
                             [lr, lr, lr * 0.1, lr * 0.1, lr * 0.01, lr * 0.01], rtol=1e-6)


def test_non_finite_loss_stops_the_run(tiny_config, tmp_path):
  """A learning rate of inf makes the parameters non-finite after step 1; step 2 must raise."""
  config = _narrow(tiny_config)
  config.learning_rate = float("inf")
  config.num_train_steps = 3
  with pytest.raises(train.NonFiniteLossError, match="step 2"):
    train.train_and_evaluate(config, str(tmp_path))
  assert checkpoints.latest_step(str(tmp_path)) is None


def test_non_finite_parameters_are_never_checkpointed(tiny_config, tmp_path):
  """Step 1's loss is finite but its update makes the parameters infinite: no checkpoint of it."""
  config = _narrow(tiny_config)
  config.learning_rate = float("inf")
  config.num_train_steps = 3
  config.checkpoint_every_steps = 1
  with pytest.raises(train.NonFiniteLossError, match=r"params.*after step 1"):
    train.train_and_evaluate(config, str(tmp_path))
  assert checkpoints.latest_step(str(tmp_path)) is None


def _counting(fn, calls):
  def traced(*args, **kwargs):
    calls.append(fn.__name__)  # Runs once per trace: jax calls the Python function to trace it.
    return fn(*args, **kwargs)
  return traced


def test_one_compilation_of_each_step_per_run(tiny_config, tmp_path, monkeypatch, caplog):
  """Steps, validations with padded batches, checkpoints, a resumed run: each step traced once."""
  config = _narrow(tiny_config)
  config.num_train_steps, config.log_every_steps = 3, 1
  config.eval_every_steps, config.checkpoint_every_steps = 2, 2
  config.eval_batch_size, config.num_eval_batches = 6, -1  # 4 objects: 2 of 3 slots padding.
  calls = []
  monkeypatch.setattr(train, "train_step", _counting(train.train_step, calls))
  monkeypatch.setattr(train, "eval_step", _counting(train.eval_step, calls))
  caplog.set_level("INFO")
  first = train.train_and_evaluate(config, str(tmp_path))
  assert sorted(calls) == ["eval_step", "train_step"]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "3"]
  assert "progress: step 1/3, first step" in caplog.text  # From the first step on.
  config.num_train_steps = 5
  calls.clear()
  resumed = train.train_and_evaluate(config, str(tmp_path))
  assert sorted(calls) == ["eval_step", "train_step"]
  assert "Resumed from" in caplog.text and resumed["train/loss"] != first["train/loss"]
  assert np.isfinite([first["eval/loss"], resumed["eval/iou_0.4"]]).all()


def test_a_gpu_sized_config_on_a_cpu_gets_a_hint(tiny_config, caplog):
  config = tiny_config.copy_and_resolve_references()
  train._hint_if_gpu_sized(config)
  assert ":tiny" not in caplog.text
  config.batch_size = 36
  train._hint_if_gpu_sized(config)
  assert "--config configs/simple_gru_k1.py:tiny" in caplog.text
